"""The README's cluster path on loopback: a token-protected head, `scripts/submit_job.sh` as the
README writes it (no --ray-address), a custom resource only an autoscaling node type brings, and a
worker node (with the token) that joins while the job waits for it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import (
    REPO,
    WEIGHTS_ROOT,
    build_inputs,
    start_head,
    start_ray,
    stop,
    token_vars,
)

pytestmark = pytest.mark.ray


@pytest.fixture
def cluster(tmp_path):
    """A CPU-only head whose 'autoscaler config' declares a GPU worker type carrying vqa_gpu."""
    autoscaler = tmp_path / "ray_bootstrap_config.yaml"
    autoscaler.write_text(yaml.safe_dump({
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 2, "GPU": 0}, "min_workers": 0, "max_workers": 0},
            "vqa_gpu_worker": {"node_config": {"InstanceType": "g6e.2xlarge"},
                               "resources": {"CPU": 1, "GPU": 1, "vqa_gpu": 1}, "min_workers": 0, "max_workers": 1},
        },
    }))
    env = {
        **os.environ, **token_vars(),
        "JANUS_RAY_FAKE_GPUS": "1", "JANUS_RAY_AUTOSCALER_CONFIG": str(autoscaler),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    head, gcs, dashboard = start_head(env, tmp_path, num_gpus=0)
    workers: list[subprocess.Popen] = []
    try:
        yield env, gcs, dashboard, workers
    finally:
        for worker in workers:
            stop(worker)
        stop(head)


def test_readme_submit_command_joins_without_ray_address_and_waits_for_the_node_type(cluster, tmp_path, request):
    env, gcs, dashboard, workers = cluster
    inputs = build_inputs(tmp_path / "data", n_prompts=3)
    folders = [str(f) for f in inputs["folders"][:2]]
    out = tmp_path / "out"
    command = [str(REPO / "scripts" / "submit_job.sh"), *folders, "--weights-root", str(WEIGHTS_ROOT),
               "--prompt-json", str(inputs["prompt_json"]), "--resource", "vqascore=vqa_gpu:1",
               "--metrics", "vqascore", "clipscore", "--output-dir", str(out), "--no-report"]
    job = subprocess.Popen(command, env={**env, "RAY_ADDRESS": dashboard}, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    time.sleep(20)  # the job plans for the node type and waits; now "the autoscaler" adds the node
    # its own temp dir: a second node on this machine would otherwise clean the head's runtime_resources
    # (the job's unpacked working dir) when it starts
    temp = tempfile.mkdtemp(prefix="jrw", dir="/tmp")
    workers.append(start_ray([f"--address={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=1",
                          f"--temp-dir={temp}",
                          '--resources={"vqa_gpu": 1}', "--disable-usage-stats"], env, tmp_path / "worker.log"))
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    try:
        output, _ = job.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        job.kill()
        raise
    assert job.returncode == 0, output[-6000:] + (tmp_path / "worker.log").read_text()[-2000:]
    assert "succeeded" in output.lower()
    assert "autoscaling" in output  # the plan knew the cluster can add the vqa_gpu node type
    for folder in folders:
        frame = pd.read_parquet(out / Path(folder).name / "janus_eval_scores.parquet")
        assert frame["VQAScore"].notna().sum() >= 2 and frame["CLIPScore"].notna().sum() >= 2
    assert (out / "summary.csv").is_file()


def test_a_worker_without_the_token_cannot_join(cluster, tmp_path):
    env, gcs, _, workers = cluster
    home = tmp_path / "home"  # no ~/.ray/auth_token there, and no RAY_AUTH_TOKEN
    home.mkdir()
    bare = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"} | {"HOME": str(home)}
    temp = tempfile.mkdtemp(prefix="jrx", dir="/tmp")
    worker = start_ray([f"--address={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={temp}",
                    "--disable-usage-stats"], bare, tmp_path / "bare.log")
    workers.append(worker)
    try:
        code = worker.wait(timeout=120)
    except subprocess.TimeoutExpired:
        code = None  # it joined and blocks: the assertion below fails
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert code not in (None, 0)
    assert "no authentication token was found" in (tmp_path / "bare.log").read_text()


"""`ray start --head` on loopback + `ray job submit` of `janus-ray eval`: a real Ray job server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .conftest import WEIGHTS_ROOT, build_inputs

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head with token authentication (Ray >= 2.60 requires a token for the job server)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    port, dashboard = free_port(), free_port()
    subprocess.run(
        [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}"],
        env=env, check=True, capture_output=True, timeout=180,
    )
    try:
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_ray_job_submit_runs_eval_on_the_cluster(ray_head, tmp_path):
    env, address = ray_head
    inputs = build_inputs(tmp_path / "data", n_prompts=3)
    folders = [str(f) for f in inputs["folders"][:2]]
    out = tmp_path / "out"
    command = [
        RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
        sys.executable, "-m", "janus_ray", "eval", *folders,
        "--weights-root", str(WEIGHTS_ROOT), "--prompt-json", str(inputs["prompt_json"]),
        "--metrics", "clipscore", "imagereward", "--output-dir", str(out), "--ray-address", "auto",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "succeeded" in (done.stdout + done.stderr).lower()
    for folder in folders:
        frame = pd.read_parquet(out / Path(folder).name / "janus_eval_scores.parquet")
        assert frame["CLIPScore"].notna().sum() >= 2 and frame["ImageReward"].notna().sum() >= 2
    assert (out / "summary.csv").is_file()

"""Local-Ray fixtures: a real Ray instance on this machine, `ray start` heads of the tests' own (with
an auth token of their own) and a small Janus-style input tree."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from janus_ray.demo import PROMPTS, make_variant_folders, synthetic_image

WEIGHTS_ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "weights"
REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")

#: One token for the whole test process: Ray's AuthenticationTokenLoader is a process-wide singleton
#: that keeps the first token it read, so a new token per test would make the second test's state-API
#: calls fail with "Invalid authentication token".
TOKEN = secrets.token_hex(32)


def token_vars() -> dict[str, str]:
    """Token auth with these tests' own token (never ~/.ray/auth_token, which other Ray instances may use)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


@pytest.fixture
def token_env(monkeypatch) -> dict[str, str]:
    """This process's environment with the tests' token, fake GPUs (80 GB each) and this checkout on
    PYTHONPATH; no RAY_ADDRESS / RAY_AUTH_TOKEN_PATH. Returns a copy of it."""
    values = {**token_vars(), "JANUS_RAY_FAKE_GPUS": "1", "JANUS_RAY_FAKE_GPU_MEMORY_GB": "80", "PYTHONPATH": str(REPO)}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    return dict(os.environ)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, seconds: float = 120) -> bool:
    """True once something listens on 127.0.0.1:``port``, False after ``seconds``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(1)
    return False


def start_ray(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A `ray start --block` process in its own session: stopped with ``stop`` (os.killpg), never
    `ray stop`, so no other Ray instance on the machine is touched."""
    return subprocess.Popen([RAY, "start", "--block", *args], env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """End a ``start_ray`` process and everything it spawned (its process group)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_head(env: dict, tmp_path: Path, num_gpus: int) -> tuple[subprocess.Popen, str, str]:
    """A head on loopback with 2 CPUs, ``num_gpus`` logical GPUs and the dashboard (job server);
    log in ``tmp_path/head.log``. Returns (process, GCS address, dashboard URL)."""
    port, dashboard = free_port(), free_port()
    head = start_ray(["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                      f"--num-gpus={num_gpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                      f"--dashboard-port={dashboard}", "--disable-usage-stats"], env, tmp_path / "head.log")
    if not wait_for_port(dashboard):
        stop(head)
        raise RuntimeError((tmp_path / "head.log").read_text()[-3000:])
    return head, f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}"


@pytest.fixture(scope="module")
def local_ray():
    """An embedded Ray instance per test module (module scope: the job-submit test runs its own
    head with `ray start`, and `ray stop` must not find an embedded instance alive)."""
    import ray

    # address="local": always a new instance of our own, even if another local cluster is running.
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


def build_inputs(root: Path, n_prompts: int = 4) -> dict:
    """Six Janus-layout folders + one metadata.jsonl folder; one corrupt image, one empty prompt."""
    prompts = PROMPTS[:n_prompts]
    variants_root = root / "variants"
    folders = make_variant_folders(variants_root, prompts)
    corrupt = folders[1] / "generated_prompts_dola_static" / "prompt_0002" / "img_00.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    # A prompt index beyond prompt.json: the row stays, with no prompt and an error.
    orphan = folders[0] / "outputs_dola" / f"prompt_{n_prompts}" / "img_00.jpg"
    orphan.parent.mkdir(parents=True)
    synthetic_image(seed=999).save(orphan)
    hf = variants_root / "hf_metadata_variant"
    hf.mkdir()
    lines = []
    for i, prompt in enumerate(prompts):
        synthetic_image(seed=500 + i).save(hf / f"img_{i}.png")
        lines.append({"file_name": f"img_{i}.png", "prompt": prompt})
    synthetic_image(seed=600).save(hf / "no_prompt.png")
    lines.append({"file_name": "no_prompt.png", "prompt": ""})
    (hf / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return {
        "root": variants_root,
        "folders": [*folders, hf],
        "prompt_json": variants_root / "prompt.json",
        "corrupt": corrupt,
        "orphan": orphan,
        "no_prompt": hf / "no_prompt.png",
        "prompts": prompts,
    }


@pytest.fixture
def inputs(tmp_path) -> dict:
    return build_inputs(tmp_path)

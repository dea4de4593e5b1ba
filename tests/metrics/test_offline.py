"""Offline guarantee: every scorer loads and scores with the network blocked, HF forced offline.

No Ray here: the scorers are used as plain Python objects.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import janus_ray
from janus_ray import list_scorers, load_scorer

IMAGES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "images"
IMAGES = [IMAGES_DIR / "astronaut.jpg", IMAGES_DIR / "chelsea_rgba.png"]
PROMPTS = ["an astronaut in a white suit", "a cat"]
EXPECTED_SCORERS = {"vqascore", "clipscore", "itmscore", "hpsv2", "hpsv2.1", "pickscore", "imagereward"}


class NetworkAccessAttempted(OSError):
    """Raised by the blocked socket functions (an OSError, as a real refused connection would be)."""


@pytest.fixture
def no_network(monkeypatch):
    """Make every way of opening a connection or resolving a name fail, and record each attempt."""
    attempts: list[str] = []

    def blocked(what):
        def refuse(*args, **kwargs):
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise NetworkAccessAttempted(f"network access attempted in an offline test: {what}")

        return refuse

    monkeypatch.setattr(socket.socket, "connect", blocked("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", blocked("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", blocked("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", blocked("getaddrinfo"))
    yield attempts
    # A library could swallow the OSError and fall back silently: any attempt at all is a failure.
    assert not attempts, f"network access attempted: {attempts}"


def test_the_registry_holds_the_expected_scorers():
    assert set(list_scorers()) == EXPECTED_SCORERS


def test_the_block_itself_works(no_network):
    with pytest.raises(NetworkAccessAttempted):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    no_network.clear()  # the deliberate attempt above is not a failure


@pytest.mark.parametrize("name", list_scorers())
def test_scorer_loads_and_scores_with_the_network_blocked(name, weights_root, no_network):
    scorer = load_scorer(name, weights_root)
    outputs = scorer.score_variants(IMAGES, PROMPTS)
    assert name in outputs
    for key, values in outputs.items():
        assert len(values) == len(IMAGES), key
        assert all(isinstance(v, float) and math.isfinite(v) for v in values), (key, values)


def test_importing_janus_ray_sets_hf_offline_in_this_process():
    assert janus_ray.__name__ == "janus_ray"
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"


@pytest.mark.slow  # a fresh interpreter importing torch: seconds of CPU
def test_importing_janus_ray_overrides_offline_variables_set_to_zero():
    """A user environment with HF_HUB_OFFLINE=0 must not re-enable the hub (fresh interpreter)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    code = (
        "import os, janus_ray, huggingface_hub.constants as c;"
        "print(os.environ['HF_HUB_OFFLINE'], os.environ['TRANSFORMERS_OFFLINE'], c.HF_HUB_OFFLINE)"
    )
    repo_root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=repo_root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "True"]

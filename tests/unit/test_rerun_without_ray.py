"""``evaluate`` starts Ray only when the resume cache leaves something to score (issue 9: a fully
cached rerun of 20k rows in <= 10 s, Ray start included). On this machine alone the plan is made
from ``local_shape`` (patched here to a fixed 2-CPU shape, so the test is the same on a GPU box);
a joined cluster is still connected to first, to learn its shape. No Ray runs in these tests:
``janus_ray.stream.connect`` is replaced by a stand-in that records the call and raises."""

from __future__ import annotations

import io
import sys
from importlib.metadata import version

import pytest

import janus_ray.stream as ray_side
from janus_ray.config import RunConfig
from janus_ray.pipeline import Stages, evaluate, plan_before_ray
from janus_ray.plan import ClusterShape
from janus_ray.stream import stream_in_process
from tests.integration.conftest import WEIGHTS_ROOT, build_inputs


class ConnectCalled(RuntimeError):
    pass


@pytest.fixture
def no_ray(monkeypatch):
    """A local run (no address, no RAY_ADDRESS, 2 CPUs, no GPU) whose Ray start is recorded and refused."""
    calls: list = []

    def connect(address):
        calls.append(address)
        raise ConnectCalled(f"connect({address!r})")

    def ray_stream(*args, **kwargs):
        raise AssertionError("the Ray stream ran")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_side, "local_shape", lambda gpu_memory_gb=None: ClusterShape.uniform(0, 0.0, 2.0))
    monkeypatch.setattr(ray_side, "connect", connect)
    monkeypatch.setattr(ray_side, "stream_scores", ray_stream)
    return calls


def config_for(inputs, **overrides) -> RunConfig:
    return RunConfig(folders=[str(f) for f in inputs["folders"][-2:]], weights_root=str(WEIGHTS_ROOT),
                     prompt_json=str(inputs["prompt_json"]), metrics=["dummy"], **overrides)


def test_a_fully_cached_rerun_never_imports_or_starts_ray(tmp_path, monkeypatch, no_ray):
    inputs = build_inputs(tmp_path)
    first = evaluate(config_for(inputs), io.StringIO(), stages=Stages(stream_scores=stream_in_process))
    assert first.n_rows - first.n_failed > 0 and no_ray == []
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` from here on raises ImportError
    log = io.StringIO()
    second = evaluate(config_for(inputs), log, stages=Stages())  # the default stages: the Ray ones
    assert no_ray == []  # Ray was never started (nor imported: that would have raised)
    assert second.n_cached == first.n_rows - first.n_failed
    assert " 0 to score" in log.getvalue()
    assert "fused in 2 CPU actor(s)" in log.getvalue()  # the layout line, from the plan's CPUs
    for folder in inputs["folders"][-2:]:
        assert (folder / "janus_eval_scores.csv").is_file()


def test_the_run_meta_names_rays_version_without_importing_ray(tmp_path, monkeypatch, no_ray):
    import json

    inputs = build_inputs(tmp_path)
    evaluate(config_for(inputs), io.StringIO(), stages=Stages(stream_scores=stream_in_process))
    monkeypatch.setitem(sys.modules, "ray", None)
    evaluate(config_for(inputs), io.StringIO(), stages=Stages())
    written = json.loads((inputs["folders"][-1] / "janus_eval_scores.json").read_text(encoding="utf-8"))
    assert written["meta"]["versions"]["ray"] == version("ray")
    assert written["meta"]["versions"]["transformers"] == version("transformers")


def test_a_partly_cached_rerun_starts_ray_before_streaming(tmp_path, no_ray):
    inputs = build_inputs(tmp_path)
    evaluate(config_for(inputs, limit=2), io.StringIO(), stages=Stages(stream_scores=stream_in_process))
    assert no_ray == []
    log = io.StringIO()
    with pytest.raises(ConnectCalled):
        evaluate(config_for(inputs), log, stages=Stages())
    assert no_ray == [None]  # the embedded local Ray, once
    assert "resume cache hits: " in log.getvalue()  # ... after the cache was read


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_joined_cluster_is_connected_to_first_to_learn_its_shape(tmp_path, monkeypatch, no_ray, how):
    config = RunConfig(folders=[str(tmp_path)], weights_root=str(WEIGHTS_ROOT), metrics=["dummy"],
                       ray_address="ray-head:6379" if how == "flag" else None)
    if how == "env":
        monkeypatch.setenv("RAY_ADDRESS", "ray-head:6379")
    config.resolve_names()
    with pytest.raises(ConnectCalled):
        plan_before_ray(config, io.StringIO())
    assert no_ray == [config.ray_address]


def test_a_dtype_a_metric_refuses_fails_in_one_line_before_ray_starts(tmp_path, no_ray, capsys):
    """`--dtype vqascore=float16` started Ray and ended in two tracebacks 25 s later."""
    from janus_ray.cli import main

    inputs = build_inputs(tmp_path)
    argv = ["eval", str(inputs["folders"][0]), "--prompt-json", str(inputs["prompt_json"]), "--weights-root",
            str(WEIGHTS_ROOT), "--metrics", "vqascore", "--dtype", "vqascore=float16"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "janus-ray: error: vqascore: float16 is not supported (FlanT5 activations overflow in fp16" in err
    assert "Traceback" not in err and no_ray == []  # Ray was never started

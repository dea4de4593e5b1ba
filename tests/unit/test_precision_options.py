"""Opt-in speed options: per-metric dtype (CLI and YAML), TF32, VQAScore's T5 attention kernel.

Defaults must not move: no dtype = reference precision, TF32 off, eager T5 attention.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from janus_ray.cli import build_parser, config_from_args
from janus_ray.config import RunConfig
from janus_ray.errors import ConfigError
from janus_ray.metrics.base import set_tf32
from janus_ray.pipeline import plan_metrics


@pytest.fixture
def run(tmp_path):
    folder, weights = tmp_path / "variant_a", tmp_path / "weights"
    folder.mkdir()
    weights.mkdir()

    def parse(*argv: str) -> RunConfig:
        return config_from_args(build_parser().parse_args(["eval", str(folder), "--weights-root", str(weights), *argv]))

    return parse


def write_yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_defaults_unchanged(run):
    config = run()
    assert config.dtype is None and config.tf32 is False
    assert all(spec.dtype is None for spec in config.metric_specs.values())
    plans = plan_metrics(config, cluster_gpus=1, cluster_cpus=8)
    assert {p.dtype for p in plans} == {None}


def test_plain_and_per_metric_dtype(run):
    config = run("--dtype", "float32", "--dtype", "vqascore=bfloat16", "--dtype", "hpsv2=float32")
    assert config.dtype == "float32"
    assert config.metric_specs["vqascore"].dtype == "bfloat16"
    plans = {p.metric: p.dtype for p in plan_metrics(config, cluster_gpus=1, cluster_cpus=8)}
    assert plans["vqascore"] == "bfloat16" and plans["clipscore"] == "float32" and plans["hpsv2"] == "float32"


def test_per_metric_dtype_alias_resolves(run):
    config = run("--dtype", "clip-flant5-xl=bfloat16")
    assert config.metric_specs["vqascore"].dtype == "bfloat16"
    assert config.metric_specs["vqascore"].options["model"] == "clip-flant5-xl"


@pytest.mark.parametrize("bad", ["float64", "vqascore=float64", "=float32", "vqascore="])
def test_bad_dtype_argument(run, bad):
    with pytest.raises(SystemExit):
        run("--dtype", bad)


def test_dtype_for_disabled_metric(run):
    with pytest.raises(ConfigError, match=r"--dtype given for 'vqascore', which is not enabled"):
        run("--metrics", "clipscore", "--dtype", "vqascore=bfloat16")


def test_yaml_metric_dtype(run, tmp_path):
    config = run("--config", str(write_yaml(tmp_path, {"metric_specs": {"itmscore": {"dtype": "float32"}}, "tf32": True})))
    assert config.metric_specs["itmscore"].dtype == "float32" and config.tf32 is True
    with pytest.raises(ConfigError, match=r"dtype of itmscore must be float32, bfloat16 or float16, got 'fp8'"):
        run("--config", str(write_yaml(tmp_path, {"metric_specs": {"itmscore": {"dtype": "fp8"}}})))
    with pytest.raises(ConfigError, match=r"dtype in metric_specs.itmscore must be a string, got 3"):
        run("--config", str(write_yaml(tmp_path, {"metric_specs": {"itmscore": {"dtype": 3}}})))
    with pytest.raises(ConfigError, match=r"tf32 in .* must be true or false, got 'yes'"):
        run("--config", str(write_yaml(tmp_path, {"tf32": "yes"})))


def test_tf32_flag(run):
    assert run("--tf32").tf32 is True


def test_set_tf32_toggles_torch_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        set_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        set_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# ----- VQAScore T5 attention -----------------------------------------------------------------------
WEIGHTS = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "weights"
IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "images"


def test_vqa_attention_option_is_checked():
    from janus_ray import load_scorer

    with pytest.raises(ConfigError, match=r"vqascore: option attn_implementation must be one of eager, sdpa, got 'flash'"):
        load_scorer("vqascore", WEIGHTS, attn_implementation="flash")
    with pytest.raises(ConfigError, match=r"vqascore: unknown option\(s\) attention; accepted: model, attn_implementation"):
        load_scorer("vqascore", WEIGHTS, attention="sdpa")


def test_vqa_sdpa_matches_eager_at_float32():
    from janus_ray import load_scorer

    images, prompts = [IMAGES / "astronaut.jpg", IMAGES / "chelsea.webp"], ["an astronaut", "a cat on a rug"]
    eager = load_scorer("vqascore", WEIGHTS, dtype="float32")
    sdpa = load_scorer("vqascore", WEIGHTS, dtype="float32", attn_implementation="sdpa")
    assert eager.t5.config._attn_implementation == "eager"
    assert sdpa.t5.config._attn_implementation == "sdpa"
    a, b = eager.score(images, prompts), sdpa.score(images, prompts)
    assert max(abs(x - y) / x for x, y in zip(a, b)) < 1e-4


def test_tf32_reaches_gpu_plans_and_their_resume_key(run, tmp_path):
    from janus_ray.pipeline import settings_key

    weights = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "weights"
    plain = {p.metric: p for p in plan_metrics(run("--metrics", "clipscore"), cluster_gpus=1, cluster_cpus=8)}
    fast = {p.metric: p for p in plan_metrics(run("--metrics", "clipscore", "--tf32"), cluster_gpus=1, cluster_cpus=8)}
    cpu = plan_metrics(run("--metrics", "clipscore", "--tf32"), cluster_gpus=0, cluster_cpus=8)
    assert not plain["clipscore"].tf32 and fast["clipscore"].tf32 and not cpu[0].tf32
    assert settings_key(plain["clipscore"], weights) != settings_key(fast["clipscore"], weights)

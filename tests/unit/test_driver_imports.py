"""The driver does not import torch (issue 9: fixed start-up cost). Importing janus_ray, its CLI,
every scorer class, and checking a run's flags and weight files import no torch, torchvision,
open_clip or transformers: the scorer modules import them inside the functions that build and run
models, which only the actors call. On a machine without a GPU driver the local cluster shape is
made without torch too, so a CPU run's driver never pays torch's ~1.6 s import before Ray starts."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import janus_ray.stream as ray_side
from janus_ray.metrics import get_scorer_class
from tests.integration.conftest import WEIGHTS_ROOT

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "open_clip", "transformers", "timm")


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_the_cli_every_scorer_class_and_the_flag_and_weight_checks_import_no_torch(tmp_path):
    done = run_python(f"""
        import sys
        import janus_ray, janus_ray.cli, janus_ray.pipeline, janus_ray.plan, janus_ray.stream, janus_ray.report
        from janus_ray.config import RunConfig
        from janus_ray.metrics import get_scorer_class, list_scorers
        from janus_ray.pipeline import check_inputs

        for name in list_scorers(include_testing=True):
            cls = get_scorer_class(name)
            cls.metadata(), cls.output_columns()
        folder = {str(tmp_path)!r}
        config = RunConfig(folders=[folder], weights_root={str(WEIGHTS_ROOT)!r}, prompt_json=None,
                           metrics=["vqascore", "clipscore", "itmscore", "hpsv2", "pickscore", "imagereward"],
                           output_dir={str(tmp_path / "out")!r})
        check_inputs(config)
        print(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"imported by the driver's code: {done.stdout}"


def test_without_a_gpu_driver_the_local_shape_has_no_gpu_and_does_not_import_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ray_side, "GPU_DRIVER_PATHS", (str(tmp_path / "no-nvidia"), str(tmp_path / "no-kfd")))
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now raises ImportError
    shape = ray_side.local_shape(None)
    assert not ray_side.may_have_gpus()
    assert shape.nodes[0].gpus == 0 and shape.nodes[0].cpus == float(os.cpu_count() or 1)


def test_with_a_gpu_driver_present_the_gpus_are_counted_by_torch(tmp_path, monkeypatch):
    import torch

    driver = tmp_path / "nvidiactl"
    driver.touch()
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ray_side, "GPU_DRIVER_PATHS", (str(driver),))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    shape = ray_side.local_shape(80.0)  # --gpu-memory-gb: no device properties asked
    assert ray_side.may_have_gpus()
    assert shape.nodes[0].gpus == 3 and shape.nodes[0].gpu_memory_gb == 80.0


def test_on_other_systems_torch_is_always_asked(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    assert ray_side.may_have_gpus()


def test_the_hps_letterbox_constants_are_open_clips():
    import open_clip

    from janus_ray.metrics.hps_v2 import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, LetterboxTransform

    assert OPENAI_DATASET_MEAN == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert OPENAI_DATASET_STD == tuple(open_clip.OPENAI_DATASET_STD)
    transform = LetterboxTransform(size=224)
    assert (transform.mean, transform.std) == (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)


def test_image_rewards_torch_modules_are_module_attributes_built_on_first_use_and_pickle():
    import torch

    from janus_ray.metrics import image_reward

    head = image_reward.RewardHead(8).eval()  # Dropouts off
    assert isinstance(head, torch.nn.Module)
    assert image_reward.RewardHead is image_reward.RewardHead  # built once
    again = pickle.loads(pickle.dumps(head))
    features = torch.randn(2, 8)
    assert torch.equal(again(features), head(features))
    assert issubclass(image_reward.ImageRewardModel, torch.nn.Module)
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        image_reward.Nothing  # noqa: B018


def test_a_scorer_still_resolves_its_dtype_in_torch():
    import torch

    from janus_ray.errors import ConfigError
    from janus_ray.metrics.base import resolve_dtype

    cpu = torch.device("cpu")
    assert resolve_dtype("bfloat16", cpu, "float16") is torch.bfloat16
    assert resolve_dtype(torch.float16, cpu, "float16") is torch.float16
    assert resolve_dtype(None, cpu, "float16") is torch.float32
    with pytest.raises(ConfigError, match="Unsupported dtype torch.float64; choose one of float32, bfloat16, float16"):
        resolve_dtype(torch.float64, cpu, "float16")
    with pytest.raises(ConfigError, match="Unsupported dtype 'int8'"):
        resolve_dtype("int8", cpu, "float16")
    assert get_scorer_class("pickscore").check_dtype("float16") is None

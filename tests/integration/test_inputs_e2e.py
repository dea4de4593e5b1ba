"""Issue 10 end to end on a real local Ray: an image that kills its actor every time, a 60000x2 image,
and a resumed per-metric run whose first rows are cached for one metric."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from janus_ray.actors.journal import KILLED_TWICE
from janus_ray.config import MetricSpec, RunConfig
from janus_ray.demo import synthetic_image
from janus_ray.pipeline import evaluate

from .conftest import WEIGHTS_ROOT

KILL_ENV = "JANUS_RAY_TEST_KILL_FILE"
REPO = Path(__file__).resolve().parents[2]

# Test-only: loaded by every Ray worker through PYTHONPATH, it makes opening one file kill the process
# (as an out-of-memory kill would), every time.
SITECUSTOMIZE = textwrap.dedent(f'''
    import os
    import sys

    _name = os.environ.get("{KILL_ENV}")
    if _name:  # patch janus_ray.images when a worker imports it (Ray's own processes never do)
        import importlib.abc
        import importlib.machinery

        class _Hook(importlib.abc.MetaPathFinder):
            def find_spec(self, fullname, path, target=None):
                if fullname != "janus_ray.images":
                    return None
                sys.meta_path.remove(self)
                spec = importlib.machinery.PathFinder.find_spec(fullname, path)
                run = spec.loader.exec_module

                def exec_module(module):
                    run(module)
                    real = module.open_image

                    def open_image(source, *args, **kwargs):
                        if str(source).endswith(_name):
                            os._exit(1)
                        return real(source, *args, **kwargs)

                    module.open_image = open_image

                spec.loader.exec_module = exec_module
                return spec

        sys.meta_path.insert(0, _Hook())
''')


def _folder(root: Path, n: int) -> tuple[Path, Path]:
    prompts = [f"a synthetic picture number {i}" for i in range(n)]
    folder = root / "variant"
    for i in range(n):
        d = folder / "run" / f"prompt_{i:04d}"
        d.mkdir(parents=True)
        synthetic_image(seed=i).save(d / "img_00.png")
    prompt_json = root / "prompt.json"
    prompt_json.write_text(json.dumps({"prompts": prompts}))
    return folder, prompt_json


@pytest.fixture
def killing_ray(tmp_path, monkeypatch):
    import ray

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(KILL_ENV, "prompt_0002/img_00.png")
    # address="local": a new instance even when a `ray start` cluster runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def own_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def test_an_image_that_kills_its_actor_every_time_ends_as_a_failed_row_and_the_run_ends(tmp_path, killing_ray):
    folder, prompt_json = _folder(tmp_path, 6)
    Image.new("RGB", (60000, 2), (10, 200, 10)).save(folder / "run" / "prompt_0004" / "img_00.png")
    result = evaluate(RunConfig(
        folders=[str(folder)], weights_root=str(WEIGHTS_ROOT), prompt_json=str(prompt_json),
        metrics=["clipscore"], metric_specs={"clipscore": MetricSpec(batch_size=3)}, decode_batch_size=3,
        output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"),
    ))
    table = pd.read_parquet(tmp_path / "out" / "variant" / "janus_eval_scores.parquet").set_index("prompt_idx")
    assert len(table) == 6
    assert table.loc[2, "error"] == f"decoding: {KILLED_TWICE}"  # the killer: failed with its reason
    assert table.loc[4, "error"].startswith("image too large") and "60000x2" in table.loc[4, "error"]
    good = table.drop(index=[2, 4])
    assert good["error"].isna().all() and good["CLIPScore"].notna().all()  # its batch-mates scored
    assert result.n_failed == 2
    assert not list((tmp_path / "cache" / "inflight").glob("*"))  # the run's journal is removed


def test_case9_resumed_per_metric_run_with_cached_first_rows_scores_every_row(tmp_path, own_ray):
    folder, prompt_json = _folder(tmp_path, 8)
    common = dict(folders=[str(folder)], weights_root=str(WEIGHTS_ROOT), prompt_json=str(prompt_json),
                  output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"), decode_batch_size=2,
                  cpu_layout="per-metric")
    # 1. the first two rows scored (and cached) for clipscore only
    evaluate(RunConfig(**common, metrics=["clipscore"], limit=2))
    # 2. the full run: decode batch 1 has no row that needs clipscore; clipscore's batches of 4
    #    merge it with real pixel blocks
    result = evaluate(RunConfig(**common, metrics=["clipscore", "pickscore"],
                                metric_specs={"clipscore": MetricSpec(batch_size=4)}))
    assert result.n_cached == 2
    table = pd.read_parquet(tmp_path / "out" / "variant" / "janus_eval_scores.parquet")
    assert table["error"].isna().all(), table["error"].dropna().tolist()
    assert table["CLIPScore"].notna().all() and table["PickScore"].notna().all()
    meta = json.loads((tmp_path / "out" / "variant" / "janus_eval_scores.json").read_text())["meta"]
    assert meta["counts"]["prompts_without_image"] == 0

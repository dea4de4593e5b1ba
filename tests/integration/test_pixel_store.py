"""The per-metric layout on a real local Ray with the pixel store: scores equal the in-process
(fused) run, every key is freed by the last stage's reports, and the object store receives each
decode batch's pixels once (plasma's created bytes, bounded by the pixel sizes); with the store
dead the pixels travel in the rows and every row is still scored."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from janus_ray import stream as stream_module
from janus_ray.actors.decode_stage import DecodeStage, pixel_column, todo_column
from janus_ray.actors.pixel_store import created_bytes, start_stores
from janus_ray.config import RunConfig
from janus_ray.manifest import build_manifest, load_prompts
from janus_ray.pipeline import Stages, evaluate

from .conftest import WEIGHTS_ROOT, build_inputs

METRICS = ["clipscore", "hpsv2", "imagereward"]


def _config(inputs: dict, out) -> RunConfig:
    return RunConfig(folders=[str(f) for f in inputs["folders"]], weights_root=str(WEIGHTS_ROOT),
                     prompt_json=str(inputs["prompt_json"]), metrics=list(METRICS), decode_batch_size=4,
                     output_dir=str(out), cpu_layout="per-metric")


def _scores(inputs: dict, out) -> pd.DataFrame:
    frames = [pd.read_parquet(out / f.name / "janus_eval_scores.parquet").assign(folder=f.name) for f in inputs["folders"]]
    return pd.concat(frames, ignore_index=True).sort_values(["folder", "image_path"], ignore_index=True)


def _pixel_bytes(inputs: dict) -> int:
    """What the decode stage produces for the run's rows: each holder metric's uint8 bytes."""
    scans = build_manifest([str(f) for f in inputs["folders"]], load_prompts(inputs["prompt_json"]))
    paths = [str(r.image_path) for scan in scans for r in scan.rows if r.prompt is not None and not r.error]
    spec = {m: {"scorer": m, "weights_root": str(WEIGHTS_ROOT), "options": {}} for m in METRICS}
    batch = {"image_path": np.array(paths, dtype=object), "decode_error": np.array([""] * len(paths), dtype=object),
             **{todo_column(m): np.ones(len(paths), bool) for m in METRICS}}
    out = DecodeStage(spec, max_pixels=None)(batch)
    return sum(len(cell) for m in METRICS for cell in out[pixel_column(m)])


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The inputs and their scores from the in-process (fused) stages, no Ray."""
    from janus_ray.stream import stream_in_process

    root = tmp_path_factory.mktemp("pixel_store")
    inputs = build_inputs(root)
    evaluate(_config(inputs, root / "local"), io.StringIO(), stages=Stages(stream_scores=stream_in_process))
    return inputs, _scores(inputs, root / "local")


def _assert_same_scores(ray_scores: pd.DataFrame, local_scores: pd.DataFrame) -> None:
    assert list(ray_scores["image_path"]) == list(local_scores["image_path"])
    assert ray_scores["error"].fillna("").tolist() == local_scores["error"].fillna("").tolist()
    assert not ray_scores["error"].fillna("").str.contains("pixels lost").any()
    for column in ("CLIPScore", "HPSv2Score", "ImageReward"):
        np.testing.assert_allclose(ray_scores[column], local_scores[column], atol=1e-5)


@pytest.mark.ray
def test_per_metric_scores_equal_in_process_scores_and_pixels_are_written_once(local_ray, tmp_path, expected):
    inputs, local_scores = expected
    before = created_bytes()
    result = evaluate(_config(inputs, tmp_path / "ray"), io.StringIO())
    created = created_bytes() - before
    _assert_same_scores(_scores(inputs, tmp_path / "ray"), local_scores)
    summary = result.pixel_stores[0] if len(result.pixel_stores) == 1 else None
    pixels = _pixel_bytes(inputs)
    assert summary is not None and summary["held_keys"] == 0 and summary["outstanding_bytes"] == 0  # all freed
    assert summary["held_bytes_total"] == pixels  # every pixel byte went through the store, once
    # Without the store the decode block alone is `pixels` and the first hop re-emits most of them
    # (>= 1.5x in all); with it, the store's one copy plus small blocks (paths, keys, scores).
    assert pixels <= created < 1.25 * pixels, (created, pixels)


@pytest.mark.ray
def test_with_the_store_dead_from_the_start_the_pixels_travel_in_the_rows(local_ray, tmp_path, expected, monkeypatch):
    import ray

    def start_then_kill(count):
        handles, spec = start_stores(count)
        for handle in handles:
            ray.kill(handle)
        return handles, spec

    monkeypatch.setattr(stream_module, "start_stores", start_then_kill)
    inputs, local_scores = expected
    result = evaluate(_config(inputs, tmp_path / "ray"), io.StringIO())
    _assert_same_scores(_scores(inputs, tmp_path / "ray"), local_scores)  # every row scored, none lost
    assert result.pixel_stores == []  # the store was gone: no summary


@pytest.mark.ray
def test_several_stores_route_each_key_to_its_own_and_all_are_freed(local_ray, tmp_path, expected, monkeypatch):
    # a large node's decode actors are spread over several stores (no one process carries every
    # pixel byte); a metric stage reads each key from the store its index names
    monkeypatch.setattr(stream_module, "store_count", lambda decode_replicas: 3)
    inputs, local_scores = expected
    result = evaluate(_config(inputs, tmp_path / "ray"), io.StringIO())
    _assert_same_scores(_scores(inputs, tmp_path / "ray"), local_scores)
    summary = result.pixel_stores[0] if len(result.pixel_stores) == 1 else None
    assert summary is not None and summary["stores"] == 3
    assert summary["held_keys"] == 0 and summary["held_bytes_total"] == _pixel_bytes(inputs)

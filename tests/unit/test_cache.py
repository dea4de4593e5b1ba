"""janus_ray.cache.ResultCache: batched appends, durability of flushed parts, last write wins."""

from __future__ import annotations

import pyarrow as pa

from janus_ray.cache import ResultCache, score_column


def _records(start: int, n: int, value: float = 1.0) -> pa.Table:
    return pa.table({
        "image_sha256": [f"h{i}" for i in range(start, start + n)],
        "prompt": ["p"] * n,
        "settings": ["s"] * n,
        score_column("m"): [value] * n,
    })


def test_first_batch_is_written_at_once_then_batched_until_due(tmp_path):
    cache = ResultCache(tmp_path, flush_rows=100, flush_seconds=3600)
    cache.append(_records(0, 5))
    assert len(cache.parts()) == 1  # progress is durable from the first batch on
    for k in range(9):
        cache.append(_records(5 + 10 * k, 10))
    assert len(cache.parts()) == 1  # 90 rows buffered, fewer than flush_rows
    cache.append(_records(95, 10))
    assert len(cache.parts()) == 2  # 100 rows reached: one part
    cache.append(_records(105, 1))
    cache.flush()
    assert len(cache.parts()) == 3
    assert len(ResultCache(tmp_path).load(compact=False)) == 106


def test_time_based_flush(tmp_path):
    cache = ResultCache(tmp_path, flush_rows=10**6, flush_seconds=0.0)
    cache.append(_records(0, 1))
    cache.append(_records(1, 1))
    assert len(cache.parts()) == 2


def test_unflushed_rows_are_all_that_a_killed_driver_loses(tmp_path):
    cache = ResultCache(tmp_path, flush_rows=10**6, flush_seconds=3600)
    cache.append(_records(0, 3))
    cache.append(_records(3, 3))  # buffered, never flushed: the process "dies" here
    assert sorted(ResultCache(tmp_path).load()["image_sha256"]) == ["h0", "h1", "h2"]


def test_a_later_record_of_the_same_key_wins_and_load_compacts(tmp_path):
    cache = ResultCache(tmp_path, flush_rows=1, flush_seconds=3600)
    cache.append(_records(0, 2, value=1.0))
    cache.append(_records(1, 2, value=2.0))
    assert len(cache.parts()) == 2
    known = ResultCache(tmp_path).load()
    assert dict(zip(known["image_sha256"], known[score_column("m")])) == {"h0": 1.0, "h1": 2.0, "h2": 2.0}
    assert len(cache.parts()) == 1
    assert len(ResultCache(tmp_path).load()) == 3


def test_an_empty_or_absent_cache_loads_as_no_records(tmp_path):
    known = ResultCache(tmp_path / "nothing").load()
    assert len(known) == 0 and list(known.columns) == ["image_sha256", "prompt", "settings"]


def _clip_plan(**overrides):
    from janus_ray.pipeline import MetricPlan

    fields = dict(metric="clipscore", options={}, columns={"clipscore": "CLIPScore"}, device="cpu", dtype=None,
                  batch_size=8, num_gpus=0.0, num_cpus=1.0, replicas=1, resources={})
    return MetricPlan(**{**fields, **overrides})


def test_a_changed_weight_file_changes_the_settings_key_and_misses_the_cache(tmp_path):
    import os
    import shutil

    import numpy as np

    from janus_ray.manifest import FolderScan, ManifestRow
    from janus_ray.pipeline import settings_key
    from janus_ray.table import BatchRecorder, manifest_frame, select_todo
    from tests.conftest import PARITY_DIR

    root = tmp_path / "weights"
    shutil.copytree(PARITY_DIR / "weights" / "clip-vit-large-patch14-336", root / "clip-vit-large-patch14-336")
    plan = _clip_plan()
    key = settings_key(plan, root)
    assert settings_key(_clip_plan(), root) == key  # stable for the same files and settings
    assert settings_key(_clip_plan(dtype="bfloat16"), root) != key  # settings are part of it

    # a run scored one pair under `key`
    image = tmp_path / "0.png"
    image.write_bytes(b"image bytes")
    scan = FolderScan(folder=str(tmp_path), convention="sidecar-txt", warnings=[],
                      rows=[ManifestRow(folder=str(tmp_path), prompt_idx=0, prompt="a cat", image_path=str(image),
                                        rel_path="0.png", sample=0)])
    frame = manifest_frame([scan])
    plan.settings_key = key
    todo, _, _ = select_todo(frame, [plan], None)
    batch = {"row_id": [0], "decode_error": [""], "_jr_out_clipscore": [0.5], "_jr_err_clipscore": [""]}
    import pandas as pd

    cache = ResultCache(tmp_path / "cache")
    cache.append(BatchRecorder(frame, [plan], todo).record(pd.DataFrame(batch)))
    cache.flush()
    assert select_todo(frame, [plan], ResultCache(tmp_path / "cache").load())[2] == 1  # a hit, same weights

    weights = root / "clip-vit-large-patch14-336" / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, new mtime
    after_touch = settings_key(_clip_plan(), root)
    config = root / "clip-vit-large-patch14-336" / "config.json"
    mtime = config.stat().st_mtime_ns
    config.write_text(config.read_text() + " ")  # one byte more, same mtime
    os.utime(config, ns=(mtime, mtime))
    after_resize = settings_key(_clip_plan(), root)
    assert len({key, after_touch, after_resize}) == 3
    plan.settings_key = after_resize
    todo2, _, n_cached = select_todo(frame, [plan], ResultCache(tmp_path / "cache").load())
    assert n_cached == 0 and np.asarray(todo2["clipscore"]).tolist() == [True]  # scored again


def test_a_half_written_part_is_skipped_and_the_others_load(tmp_path):
    cache = ResultCache(tmp_path, flush_rows=1, flush_seconds=3600)
    cache.append(_records(0, 2))
    (tmp_path / "part-99999999999999999999-deadbeef.parquet").write_bytes(b"PAR1 cut short")  # not atomic
    (tmp_path / ".part-1.parquet.abc.tmp").write_bytes(b"a temporary file of a killed write")
    known = ResultCache(tmp_path).load(compact=False)
    assert sorted(known["image_sha256"]) == ["h0", "h1"]

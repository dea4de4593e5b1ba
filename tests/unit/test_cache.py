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

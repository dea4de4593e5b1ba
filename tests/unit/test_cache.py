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
    # the same weights root copied elsewhere with its times (cp -a, rsync -a, another mount): still a hit
    # (a new user's trial: an identical copy at another path rescored everything)
    copy = tmp_path / "moved" / "weights"
    shutil.copytree(root, copy, copy_function=shutil.copy2)
    assert settings_key(_clip_plan(), copy) == key

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


# ----- weight-file hashes: memoised, in threads ---------------------------------------------------
def _weights(tmp_path, sizes=(3 << 20, 1000)) -> list:
    import os

    files = []
    for i, size in enumerate(sizes):
        path = tmp_path / "weights" / f"shard-{i}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(size))  # > one 1 MiB read chunk for the first
        files.append(path)
    return files


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_weight_hashes_equal_hashlib_and_a_rerun_reads_no_weight_file(tmp_path, monkeypatch):
    import janus_ray.cache as cache_module
    from janus_ray.cache import WEIGHTS_MEMO, WeightHashes

    files = _weights(tmp_path)
    first = WeightHashes(tmp_path / "cache", files).result()
    assert first == {str(f): _sha(f) for f in files}
    assert (tmp_path / "cache" / WEIGHTS_MEMO).is_file()

    def no_read(*args, **kwargs):
        raise AssertionError("a weight file was read again")

    monkeypatch.setattr(cache_module, "file_sha256", no_read)
    assert WeightHashes(tmp_path / "cache", files).result() == first
    assert ResultCache(tmp_path / "cache").weights_sha256(files) == first  # the cache's own entry point


def test_a_changed_mtime_or_size_is_hashed_again(tmp_path, monkeypatch):
    import os

    import janus_ray.cache as cache_module
    from janus_ray.cache import WeightHashes

    files = _weights(tmp_path)
    WeightHashes(tmp_path / "cache", files).result()
    read = []
    real = cache_module.file_sha256
    monkeypatch.setattr(cache_module, "file_sha256", lambda path, **kw: read.append(str(path)) or real(path, **kw))

    touched, resized = files
    stat = touched.stat()
    touched.write_bytes(b"\0" * stat.st_size)  # same size, new content ...
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # ... and a new mtime
    stat = resized.stat()
    resized.write_bytes(resized.read_bytes() + b"x")  # one byte more, the same mtime
    os.utime(resized, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = WeightHashes(tmp_path / "cache", files).result()
    assert sorted(read) == sorted(str(f) for f in files)
    assert again == {str(f): _sha(f) for f in files}
    read.clear()
    assert WeightHashes(tmp_path / "cache", files).result() == again and read == []  # memo updated


def test_weight_hashing_runs_in_threads_started_at_construction(tmp_path, monkeypatch):
    import threading

    import janus_ray.cache as cache_module
    from janus_ray.cache import WeightHashes

    files = _weights(tmp_path, sizes=(10, 20, 30))
    release, threads = threading.Event(), set()
    real = cache_module.file_sha256

    def gated(path, **kw):
        threads.add(threading.current_thread().name)
        assert release.wait(30)
        return real(path, **kw)

    monkeypatch.setattr(cache_module, "file_sha256", gated)
    job = WeightHashes(tmp_path / "cache", files)  # returns while every hash is still running
    release.set()
    assert job.result() == {str(f): _sha(f) for f in files}
    assert threads and all(name.startswith("janus-ray-weights") for name in threads)
    assert threading.main_thread().name not in threads


def test_a_cancelled_hash_stops_reading_and_is_not_memoised(tmp_path, monkeypatch):
    import threading

    import janus_ray.cache as cache_module
    from janus_ray.cache import WEIGHTS_MEMO, WeightHashes, file_sha256

    files = _weights(tmp_path, sizes=(3 << 20,))
    stop = threading.Event()
    stop.set()
    assert file_sha256(files[0], stop=stop) == ""  # stopped at the first chunk
    real = cache_module.file_sha256

    def slow(path, stop=None, **kw):  # still reading when the run fails
        assert stop is not None and stop.wait(30)
        return real(path, stop=stop, **kw)

    monkeypatch.setattr(cache_module, "file_sha256", slow)
    job = WeightHashes(tmp_path / "cache", files)
    job.cancel()  # what a failed run calls
    assert job.result() == {} and not (tmp_path / "cache" / WEIGHTS_MEMO).exists()

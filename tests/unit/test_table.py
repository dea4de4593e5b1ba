"""janus_ray.table: manifest frame, resume selection, cache records, assembly (no Ray)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from janus_ray.actors.decode_stage import stage_error_column, todo_column
from janus_ray.actors.metric_actor import output_column
from janus_ray.cache import ResultCache, score_column
from janus_ray.manifest import FolderScan, ManifestRow
from janus_ray.table import (
    BatchRecorder,
    assemble,
    dataset_rows,
    hash_files,
    manifest_frame,
    input_blocks,
    rows_per_block,
    select_todo,
)

CLIP = SimpleNamespace(metric="clipscore", scorer="clipscore", columns={"clipscore": "CLIPScore"},
                       settings_key="s-clip", batch_size=8)
PICK = SimpleNamespace(metric="pickscore", scorer="pickscore",
                       columns={"pickscore": "PickScore", "pickscore_scaled": "PickScore_scaled"},
                       settings_key="s-pick", batch_size=32)


def _scans(tmp_path, n_folders=2, prompts=("a cat", "a dog", "a cow")):
    scans = []
    for f in range(n_folders):
        folder = tmp_path / f"run{f}"
        folder.mkdir()
        rows = []
        for i, prompt in enumerate(prompts):
            path = folder / f"{i}.png"
            path.write_bytes(f"image {f} {i}".encode())
            rows.append(ManifestRow(folder=str(folder), prompt_idx=i, prompt=prompt, image_path=str(path),
                                    rel_path=f"{i}.png", sample=0))
        scans.append(FolderScan(folder=str(folder), convention="sidecar-txt", rows=rows, warnings=[]))
    return scans


def test_hashes_are_the_file_sha256_in_order_and_empty_when_unreadable(tmp_path):
    paths = []
    for i in range(600):  # more than one chunk of the thread pool
        path = tmp_path / f"{i}.bin"
        path.write_bytes(str(i).encode())
        paths.append(str(path))
    paths.append(str(tmp_path / "absent.bin"))
    digests = hash_files(paths, workers=3)
    assert list(digests[:600]) == [hashlib.sha256(str(i).encode()).hexdigest() for i in range(600)]
    assert digests[600] == ""


def test_a_hash_job_skips_files_whose_stat_matches_the_memo_and_reads_the_others(tmp_path):
    import os

    from janus_ray.table import HashJob

    paths = []
    for i in range(300):  # more than one chunk
        path = tmp_path / f"{i}.bin"
        path.write_bytes(str(i).encode())
        paths.append(str(path))
    first = HashJob(paths, workers=2)
    digests, stats = first.result(), first.stats()
    assert first.reads == 300 and first.memo_hits == 0
    st = os.stat(paths[0])
    assert tuple(stats[0]) == (st.st_size, st.st_mtime_ns, st.st_ino)
    memo = {p: (*map(int, stats[i]), "memo-" + str(i)) for i, p in enumerate(paths)}
    memo[paths[5]] = (int(stats[5][0]) + 1, *map(int, stats[5][1:]), "stale")  # the size differs
    again = HashJob(paths, workers=2, memo=memo)
    out = again.result()
    assert again.reads == 1 and again.memo_hits == 299
    assert out[5] == digests[5] and out[6] == "memo-6"
    flags = [i % 2 == 0 for i in range(300)]
    partial = HashJob(paths, workers=2, read=flags)
    out = partial.result()
    assert partial.reads == 150 and out[1] is None and out[0] == digests[0]
    assert (partial.stats()[:, 0] > 0).all()  # every file is stat'ed, read or not
    with pytest.raises(ValueError, match="HashJob: 2 read flags for 300 paths"):
        HashJob(paths, read=[True, False])


def test_the_image_memo_comes_from_records_with_the_files_stat_and_ignores_older_records():
    from janus_ray.cache import image_memo

    mtime = 1_796_102_913_123_456_789  # beyond float64's exact integers: must stay exact
    known = pd.DataFrame({
        "image_sha256": ["a", "b", "c"], "prompt": ["p", "q", "p"], "settings": ["s"] * 3,
        "file_path": ["/x.png", "/y.png", "/x.png"],
        "file_size": pd.array([10, None, 12], dtype="Int64"),
        "file_mtime_ns": pd.array([mtime, 5, mtime + 1], dtype="Int64"),
        "file_ino": pd.array([7, 8, 9], dtype="Int64"),
    })
    assert image_memo(known) == {"/x.png": (12, mtime + 1, 9, "c")}  # the last record of a path; no null stat
    assert image_memo(known.drop(columns=["file_ino"])) == {}
    assert image_memo(None) == {}


def test_manifest_frame_columns_missing_prompt_and_row_ids(tmp_path):
    scans = _scans(tmp_path, n_folders=1, prompts=("p", None))
    frame = manifest_frame(scans)
    assert list(frame["row_id"]) == [0, 1]
    assert frame["error"].tolist() == [None, "missing prompt"]
    assert frame["prompt"].tolist() == ["p", None]
    assert str(frame["prompt_idx"].dtype) == "Int64"
    with pytest.raises(ValueError, match="2 hashes for 2 rows|hashes for"):
        manifest_frame(scans, np.array(["x"], dtype=object))


def test_dataset_rows_are_prompt_major_across_folders(tmp_path):
    frame = manifest_frame(_scans(tmp_path, n_folders=3))
    todo = {"clipscore": np.ones(len(frame), bool)}
    todo["clipscore"][4] = False  # folder 1, prompt "a dog": nothing to do
    rows = dataset_rows(frame, todo)
    prompts = rows["prompt"].tolist()
    assert prompts == ["a cat"] * 3 + ["a dog"] * 2 + ["a cow"] * 3
    assert 4 not in set(rows["row_id"])
    assert rows[todo_column("clipscore")].all() and rows["has_prompt"].all()
    assert rows_per_block([CLIP, PICK], 16) == 32  # few rows: one batch per block
    assert rows_per_block([CLIP, PICK], 16, n_rows=20_000) == 313  # ~64 blocks
    assert rows_per_block([CLIP, PICK], 16, n_rows=10**6) == 1024  # bounded


def test_input_blocks_cover_every_row_once_in_order_in_even_blocks():
    rows = pd.DataFrame({"row_id": np.arange(20_004)})
    blocks = input_blocks(rows, [CLIP, PICK], 16)
    assert [len(b) for b in blocks] == [313] * 63 + [285]
    assert pd.concat(blocks)["row_id"].tolist() == list(range(20_004))
    assert [len(b) for b in input_blocks(rows.iloc[:5], [CLIP, PICK], 16)] == [5]
    assert input_blocks(rows.iloc[:0], [CLIP, PICK], 16) == []


def _batch(row_ids, plans, values, errors=None):
    batch = {"row_id": np.array(row_ids), "decode_error": [""] * len(row_ids)}
    for plan in plans:
        for key in plan.columns:
            batch[output_column(key)] = np.array(values[key], dtype=float)
        batch[stage_error_column(plan.metric)] = (errors or {}).get(plan.metric, [""] * len(row_ids))
    return pd.DataFrame(batch)


def test_cache_round_trip_selects_only_the_missing_pairs(tmp_path):
    frame = manifest_frame(_scans(tmp_path, n_folders=2))
    plans = [CLIP, PICK]
    todo, cached, n_cached = select_todo(frame, plans, None)
    assert n_cached == 0 and all(flags.all() for flags in todo.values())
    recorder = BatchRecorder(frame, plans, todo)
    cache = ResultCache(tmp_path / "cache", flush_rows=10**6, flush_seconds=10**6)
    # rows 0..2 scored; row 1's pickscore failed (NaN) so it must not be cached
    batch = _batch([0, 1, 2], plans, {"clipscore": [0.1, 0.2, 0.3], "pickscore": [1.0, np.nan, 3.0],
                                      "pickscore_scaled": [10.0, np.nan, 30.0]})
    cache.append(recorder.record(batch))
    cache.flush()
    known = ResultCache(tmp_path / "cache").load()
    todo2, cached2, n_cached2 = select_todo(frame, plans, known)
    assert n_cached2 == 3 + 2
    assert list(np.flatnonzero(~todo2["clipscore"])) == [0, 1, 2]
    assert list(np.flatnonzero(~todo2["pickscore"])) == [0, 2]
    np.testing.assert_allclose(cached2["pickscore"]["pickscore_scaled"][[0, 2]], [10.0, 30.0])
    # identical content in the other folder would hit too: content, not path, is the key
    table = assemble(frame, plans, cached2, [_batch([1, 3, 4, 5], plans, {
        "clipscore": [9.0, 0.4, 0.5, 0.6], "pickscore": [2.0, 4.0, 5.0, np.nan],
        "pickscore_scaled": [20.0, 40.0, 50.0, np.nan]}, errors={"pickscore": ["", "", "", "boom"]})])
    assert table["CLIPScore"].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # row 1: the cached value wins
    assert table["PickScore"].tolist()[:5] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert np.isnan(table["PickScore"].iloc[5])
    assert table["error"].tolist() == [None] * 5 + ["pickscore: boom"]


def test_assemble_joins_scan_decode_and_metric_errors(tmp_path):
    frame = manifest_frame(_scans(tmp_path, n_folders=1, prompts=("p", None, "q")))
    todo, cached, _ = select_todo(frame, [CLIP], None)
    assert todo["clipscore"].tolist() == [True, False, True]
    batch = _batch([0, 2], [CLIP], {"clipscore": [np.nan, np.nan]},
                   errors={"clipscore": ["", "scoring failed: X"]})
    batch["decode_error"] = ["unreadable image: bad", ""]
    table = assemble(frame, [CLIP], cached, [batch])
    assert table["error"].tolist() == ["unreadable image: bad", "missing prompt", "clipscore: scoring failed: X"]


def test_cache_reads_parts_in_the_old_json_format_and_compacts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = tmp_path / "cache"
    directory.mkdir()
    old = pa.table({"image_sha256": ["h1"], "prompt": ["p"], "settings": ["s"], "scores": ['{"clipscore": 0.5}']})
    pq.write_table(old, directory / "part-0123abcd.parquet")
    cache = ResultCache(directory, flush_rows=1, flush_seconds=0)
    cache.append(pa.table({"image_sha256": ["h2"], "prompt": ["p"], "settings": ["s"],
                           score_column("clipscore"): [0.7]}))
    known = ResultCache(directory).load()
    assert sorted(zip(known["image_sha256"], known[score_column("clipscore")])) == [("h1", 0.5), ("h2", 0.7)]
    assert len(list(directory.glob("part-*.parquet"))) == 1  # compacted
    again = ResultCache(directory).load()
    assert len(again) == 2

"""The driver's table: manifest frame, resume selection, cache records and assembly (no Ray).

Everything here is column-at-a-time (numpy / pandas / pyarrow): the driver must stay flat to a
million rows, so no per-row ``.loc`` / ``.at`` and no per-batch conversion of a whole column.
``row_id`` is the row's position in the manifest frame, so a result batch's ``row_id`` column
indexes the frame's arrays directly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from janus_ray.actors.decode_stage import stage_error_column, todo_column
from janus_ray.columns import IMAGE_SHA256
from janus_ray.actors.metric_actor import output_column
from janus_ray.cache import ERROR_COLUMN, MEMO_PATH, STAT_FIELDS, score_column
from janus_ray.manifest import FolderScan, unreadable_reason

if TYPE_CHECKING:  # only for annotations: the plan class lives with the planning code
    from janus_ray.pipeline import MetricPlan

MISSING_PROMPT = "missing prompt"
FRAME_COLUMNS = ["folder", "prompt_idx", "prompt", "image_path", "abs_path", "sample", "error"]


# ---------------------------------------------------------------------------------------------
# Content hashes, off the driver's serial loop
# ---------------------------------------------------------------------------------------------
def _hash_chunk(paths: Sequence[str], memo: dict | None, read: Sequence[bool]) -> tuple[list, np.ndarray, int, int]:
    """(sha256 per path, (n, 3) int64 STAT_FIELDS, files read, memo hits). A path whose stat matches its memo
    entry is not read. ``read[i]`` False: stat only, the sha256 None."""
    from janus_ray.cache import file_sha256

    shas: list = []
    stats = np.full((len(paths), len(STAT_FIELDS)), -1, dtype=np.int64)
    reads = hits = 0
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            shas.append("" if read[i] else None)  # unreadable: the row fails as such
            continue
        stats[i] = (st.st_size, st.st_mtime_ns, st.st_ino)
        entry = memo.get(path) if memo else None
        if entry is not None and entry[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
            shas.append(entry[3])
            hits += 1
        elif read[i]:
            shas.append(file_sha256(Path(path)))
            reads += 1
        else:
            shas.append(None)
    return shas, stats, reads, hits


class HashJob:
    """sha256 of every file, computed by a thread pool (hashlib, reads and stat release the GIL).

    Started before Ray so hashing overlaps the Ray start. Each file is stat'ed first (its
    ``STAT_FIELDS``, recorded with its cache records); one whose path, size, mtime and inode match
    ``memo`` (``cache.image_memo``: an earlier run's records) is not read, so a rerun over
    unchanged files reads no image byte on the driver. ``read`` False: stat only (a first run, the
    decode stage hashes the bytes it decodes); one flag per path: stat only where False (a row
    that cannot be scored anyway, e.g. without a prompt). Chunks of a few hundred paths keep the
    per-task overhead negligible at a million files.

    ``result()`` -> object array of hex digests ('' for a file that cannot be read; None where not
    read); then ``stats()`` -> (n, 3) int64, ``reads``: files read here, ``memo_hits``: files not
    read as unchanged.
    """

    def __init__(self, paths: Sequence[str], workers: int | None = None, chunk: int = 256, *,
                 memo: dict | None = None, read: bool | Sequence[bool] = True):
        paths = list(paths)
        self.n = len(paths)
        read = [bool(read)] * self.n if isinstance(read, (bool, np.bool_)) else list(read)
        if len(read) != self.n:
            raise ValueError(f"HashJob: {len(read)} read flags for {self.n} paths")
        self.reads = self.memo_hits = 0
        self._stats = np.full((self.n, len(STAT_FIELDS)), -1, dtype=np.int64)
        workers = workers or min(32, 4 * (os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="janus-ray-hash")
        self._futures: list[Future] = [
            self._pool.submit(_hash_chunk, paths[i : i + chunk], memo, read[i : i + chunk])
            for i in range(0, self.n, chunk)
        ]

    def result(self) -> np.ndarray:
        out = np.empty(self.n, dtype=object)
        position = 0
        try:
            for future in self._futures:
                digests, stats, reads, hits = future.result()
                out[position : position + len(digests)] = digests
                self._stats[position : position + len(digests)] = stats
                self.reads += reads
                self.memo_hits += hits
                position += len(digests)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
        return out

    def stats(self) -> np.ndarray:
        """(n, 3) int64 ``STAT_FIELDS`` per path (-1: not stat'ed); complete after ``result()``."""
        return self._stats


def hash_files(paths: Sequence[str], workers: int | None = None) -> np.ndarray:
    """sha256 hex digest of each path ('' when unreadable), computed in parallel threads."""
    return HashJob(paths, workers).result()


# ---------------------------------------------------------------------------------------------
# The manifest frame
# ---------------------------------------------------------------------------------------------
def manifest_frame(scans: list[FolderScan], sha256: np.ndarray | HashJob | None = None) -> pd.DataFrame:
    """One row per image-text pair of every folder, with a stable ``row_id`` and its content hash.

    ``sha256``: the digests in row order (or a running ``HashJob``); None hashes here, in threads.
    Columns: FRAME_COLUMNS + ``row_id`` (int64 = position) + ``image_sha256`` (str, '' unreadable,
    None where not read: see ``HashJob``) + ``STAT_FIELDS`` (int64, -1 unknown).
    """
    rows = [row for scan in scans for row in scan.rows]
    columns = {
        "folder": [scan.folder for scan in scans for _ in scan.rows],
        "prompt_idx": [row.prompt_idx for row in rows],
        "prompt": [row.prompt for row in rows],
        "image_path": [row.rel_path for row in rows],
        "abs_path": [row.image_path for row in rows],
        "sample": [row.sample for row in rows],
        "error": [row.error for row in rows],
    }
    frame = pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()})
    prompt_missing = frame["prompt"].isna().to_numpy()
    error = frame["error"].to_numpy(dtype=object, copy=True)
    error[prompt_missing & pd.isna(error)] = MISSING_PROMPT
    frame["prompt_idx"] = pd.array(frame["prompt_idx"].to_numpy(dtype=object), dtype="Int64")
    frame["sample"] = frame["sample"].astype(np.int64) if len(frame) else frame["sample"]
    frame["row_id"] = np.arange(len(frame), dtype=np.int64)
    if sha256 is None:
        sha256 = HashJob(frame["abs_path"].tolist())
    digests = sha256.result() if isinstance(sha256, HashJob) else np.asarray(sha256, dtype=object)
    if len(digests) != len(frame):
        raise ValueError(f"manifest_frame: {len(digests)} hashes for {len(frame)} rows")
    frame["image_sha256"] = pd.Series(digests, dtype=object)
    stats = sha256.stats() if isinstance(sha256, HashJob) else np.full((len(frame), len(STAT_FIELDS)), -1, np.int64)
    for j, name in enumerate(STAT_FIELDS):
        frame[name] = stats[:, j]
    for i in np.flatnonzero((digests == "") & pd.isna(error)):  # unreadable files only: few
        error[i] = f"unreadable image: {unreadable_reason(frame['abs_path'].iat[i])}"
    # keep None (not NaN) for absent text: results and tests read `is None`
    frame["error"] = pd.Series(np.where(pd.isna(error), None, error), dtype=object)
    return frame


# ---------------------------------------------------------------------------------------------
# Resume: what is cached, what is left to score
# ---------------------------------------------------------------------------------------------
def scorable(frame: pd.DataFrame) -> np.ndarray:
    """Rows that can be scored at all: no scan-time error and a readable file."""
    return frame["error"].isna().to_numpy() & (frame["image_sha256"].to_numpy(dtype=object) != "")


#: stands for the image's path in a cached failure text (the same bytes may sit at several paths)
IMAGE_PATH_MARK = "<image>"
#: key in ``cached_scores``' result: the cached failure text per row (None: no cached failure)
CACHED_ERROR = "_error"


def decoder_stamp() -> str:
    """Prefix of a cached decode failure: the Pillow that failed. A failure cached by another Pillow
    is not reused (a newer one may read the file), while the scores stay cached."""
    import PIL

    return f"[Pillow {PIL.__version__}] "


def _current_failures(errors: np.ndarray) -> np.ndarray:
    """Cached failure texts stamped by this Pillow, stamp removed; None for the others (retried)."""
    stamp = decoder_stamp()
    out = np.full(len(errors), None, dtype=object)
    for i in np.flatnonzero(~pd.isna(errors)):  # rows with a cached failure only: few
        text = str(errors[i])
        if text.startswith(stamp):
            out[i] = text[len(stamp):]
    return out

#: decode failures that are not a property of the file's bytes (a vanished file, permissions, I/O),
#: so they are never cached: the next run tries the row again
_TRANSIENT = ("FileNotFoundError", "PermissionError", "IsADirectoryError", "TimeoutError", "BlockingIOError",
              "InterruptedError", "ConnectionError", "[Errno")


def cacheable_decode_errors(errors: np.ndarray) -> np.ndarray:
    """True where a decode error is a property of the image's bytes (a file Pillow cannot decode):
    the same bytes fail the same way, so the failure is cached under their sha256 and a rerun does
    not start Ray for it again. An over-size image is not cached (it depends on --max-image-pixels)."""
    errors = np.asarray(errors, dtype=object)
    out = _non_empty(errors)
    for i in np.flatnonzero(out):  # rows with a decode error only: few (a result batch costs O(1) without)
        text = str(errors[i])
        out[i] = text.startswith("unreadable image: ") and not any(marker in text for marker in _TRANSIENT)
    return out


def cached_scores(frame: pd.DataFrame, plan: MetricPlan, known: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """The cached outputs of ``plan`` aligned to ``frame``: {output key: float64 array, NaN = absent,
    ``CACHED_ERROR``: object array, the cached decode failure or None}.

    ``known``: ``ResultCache.load()`` (image_sha256, prompt, settings, ``score:<key>`` columns and,
    for cached failures, ``error``). A row counts as cached when its primary output or a failure is.
    """
    n = len(frame)
    out: dict[str, np.ndarray] = {key: np.full(n, np.nan) for key in plan.columns}
    out[CACHED_ERROR] = np.full(n, None, dtype=object)
    if known is None or known.empty or score_column(plan.metric) not in known:
        return out
    mine = known[known["settings"].to_numpy() == plan.settings_key]
    present = mine[score_column(plan.metric)].notna()
    if ERROR_COLUMN in mine:
        mine = mine.assign(**{ERROR_COLUMN: _current_failures(mine[ERROR_COLUMN].to_numpy(dtype=object))})
        present |= mine[ERROR_COLUMN].notna()
    mine = mine[present]
    if mine.empty:
        return out
    mine = mine.drop_duplicates(["image_sha256", "prompt"], keep="last")
    index = pd.MultiIndex.from_arrays([mine["image_sha256"].astype(object), mine["prompt"].astype(object)])
    wanted = pd.MultiIndex.from_arrays([frame["image_sha256"], frame["prompt"]])
    position = index.get_indexer(wanted)
    hit = position >= 0
    for key in plan.columns:
        if score_column(key) in mine:
            values = mine[score_column(key)].to_numpy(dtype=np.float64, na_value=np.nan)
            out[key][hit] = values[position[hit]]
    if ERROR_COLUMN in mine:
        errors = mine[ERROR_COLUMN].to_numpy(dtype=object)
        out[CACHED_ERROR][hit] = errors[position[hit]]
        out[CACHED_ERROR][pd.isna(out[CACHED_ERROR])] = None
    return out


def _cached(scores: dict[str, np.ndarray], metric: str) -> np.ndarray:
    """Rows whose ``metric`` is in the cache: a score, or a failure of the image's bytes."""
    return ~np.isnan(scores[metric]) | ~pd.isna(scores[CACHED_ERROR])


def select_todo(
    frame: pd.DataFrame, plans: list[MetricPlan], known: pd.DataFrame | None
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], int]:
    """(todo flags per metric, cached outputs per metric, number of cached (row, metric) pairs).

    todo[metric][i] is True when row i is scorable and not in the cache for that metric's settings.
    """
    ok = scorable(frame)
    todo, cached, n_cached = {}, {}, 0
    for plan in plans:
        scores = cached_scores(frame, plan, known)
        todo[plan.metric] = ok & ~_cached(scores, plan.metric)
        cached[plan.metric] = scores
        n_cached += int((~np.isnan(scores[plan.metric])).sum())  # scores; cached failures: cached_failures()
    return todo, cached, n_cached


def cached_failures(cached: dict[str, dict[str, np.ndarray]]) -> int:
    """(row, metric) pairs whose cached record is a failure of the image's bytes (``select_todo``'s cached)."""
    return sum(int((~pd.isna(scores[CACHED_ERROR])).sum()) for scores in cached.values())


def dataset_rows(frame: pd.DataFrame, todo: dict[str, np.ndarray]) -> pd.DataFrame:
    """The rows to stream (any metric to do), prompt-major across folders.

    Ordering by prompt (first-appearance order), folders inside a prompt, puts the variants of
    one prompt in the same or adjacent batches, so each actor's text-feature cache hits across
    folders whatever the prompt count. Columns: row_id, image_path, prompt, has_prompt,
    decode_error, ``_jr_todo_<metric>``.
    """
    if not todo:
        return pd.DataFrame({"row_id": np.empty(0, np.int64)})
    wanted = np.logical_or.reduce([flags for flags in todo.values()])
    selected = np.flatnonzero(wanted)
    codes, _ = pd.factorize(frame["prompt"].to_numpy(dtype=object)[selected], use_na_sentinel=True)
    selected = selected[np.argsort(codes, kind="stable")]
    prompt = frame["prompt"].to_numpy(dtype=object)[selected]
    has_text = ~pd.isna(prompt)
    error_free = frame["error"].isna().to_numpy()[selected]
    rows = pd.DataFrame(
        {
            "row_id": selected.astype(np.int64),
            "image_path": frame["abs_path"].to_numpy(dtype=object)[selected],
            "prompt": np.where(has_text, prompt, ""),
            "has_prompt": has_text & error_free,
            "decode_error": np.full(len(selected), "", dtype=object),
        }
    )
    for metric, flags in todo.items():
        rows[todo_column(metric)] = flags[selected]
    return rows


def rows_per_block(plans: list[MetricPlan], decode_batch_size: int, n_rows: int = 0,
                   target_blocks: int = 64, max_rows: int = 1024) -> int:
    """Rows per input block of the stream.

    Every block costs Ray one task per stage, one projection task and one result batch on the
    driver, so blocks hold many batches: about ``target_blocks`` blocks in all (enough to stream
    results and balance the actors), at most ``max_rows`` rows, at least the largest batch.
    """
    largest_batch = max([decode_batch_size, *(p.batch_size for p in plans)])
    return max(largest_batch, min(max_rows, -(-n_rows // target_blocks)))


def input_blocks(rows: pd.DataFrame, plans: list[MetricPlan], decode_batch_size: int) -> list[pd.DataFrame]:
    """``rows`` cut into the stream's input blocks, in order: as many blocks as ``rows_per_block``
    asks for, each of the same size but the last (20,004 rows: 63 blocks of 313 and one of 285)."""
    n_blocks = max(1, -(-len(rows) // rows_per_block(plans, decode_batch_size, len(rows))))
    step = max(1, -(-len(rows) // n_blocks))
    return [rows.iloc[i : i + step] for i in range(0, len(rows), step)]


# ---------------------------------------------------------------------------------------------
# Result batches -> cache records
# ---------------------------------------------------------------------------------------------
class BatchRecorder:
    """Turns result batches into resume-cache records, reading the frame's columns once.

    ``record(batch)`` -> a pyarrow table (image_sha256, prompt, settings, ``score:<key>``...) of
    the batch's successful scores of metrics that were to do for those rows, and (scores null,
    ``error`` set) its rows whose image bytes cannot be decoded (``cacheable_decode_errors``), when
    their sha256 is known: the driver's (the frame's ``image_sha256``) or, where the driver did not
    hash (None: a first run, ``pipeline.hashes_deferred``), the decode stage's ``IMAGE_SHA256`` of
    the bytes it decoded. Cost: O(batch).
    """

    def __init__(self, frame: pd.DataFrame, plans: list[MetricPlan], todo: dict[str, np.ndarray]):
        self.shas = frame["image_sha256"].to_numpy(dtype=object)
        self.paths = frame["abs_path"].to_numpy(dtype=object)
        self.stats = (np.stack([frame[name].to_numpy(dtype=np.int64) for name in STAT_FIELDS], axis=1)
                      if all(name in frame for name in STAT_FIELDS) else np.full((len(frame), len(STAT_FIELDS)), -1))
        self.prompts = frame["prompt"].to_numpy(dtype=object)
        self.plans, self.todo = plans, todo

    def record(self, batch: pd.DataFrame) -> pa.Table | None:
        row_ids = batch["row_id"].to_numpy(dtype=np.int64)
        decode_error = batch["decode_error"].to_numpy(dtype=object) if "decode_error" in batch else None
        shas = self.shas[row_ids]
        deferred = pd.isna(shas)  # not hashed on the driver (a first run): the decode stage's hash
        if deferred.any():
            from_stage = (batch[IMAGE_SHA256].to_numpy(dtype=object) if IMAGE_SHA256 in batch
                          else np.full(len(row_ids), "", dtype=object))
            shas = np.where(deferred, from_stage, shas)
        known = _non_empty(shas)  # a row is cached only under the sha256 of its bytes
        failed = np.zeros(len(row_ids), dtype=bool)
        if decode_error is not None and len(row_ids):
            failed = cacheable_decode_errors(decode_error)
            if failed.any():  # and only under a known sha256
                failed &= known
        tables = []
        for plan in self.plans:
            primary = batch[output_column(plan.metric)].to_numpy(dtype=np.float64, na_value=np.nan)
            todo = self.todo[plan.metric][row_ids]
            keep = todo & (~np.isnan(primary) | failed) & known
            if not keep.any():
                continue
            ids = row_ids[keep]
            columns: dict[str, Any] = {
                "image_sha256": pa.array(shas[keep], pa.string()),
                "prompt": pa.array(self.prompts[ids], pa.string()),
                "settings": pa.array(np.full(len(ids), plan.settings_key, dtype=object), pa.string()),
                # the file the sha256 came from, as stat'ed before it was read: a rerun's memo
                # (cache.image_memo), so unchanged files are not read again on the driver
                MEMO_PATH: pa.array(self.paths[ids], pa.string()),
            }
            for j, name in enumerate(STAT_FIELDS):
                values = self.stats[ids, j]
                columns[name] = pa.array(values, pa.int64(), mask=values < 0)
            for key in plan.columns:
                values = batch[output_column(key)].to_numpy(dtype=np.float64, na_value=np.nan)[keep]
                columns[score_column(key)] = pa.array(values, pa.float64())
            if failed[keep].any():
                errors = np.full(int(keep.sum()), None, dtype=object)
                stamp = decoder_stamp()
                for j, i in enumerate(np.flatnonzero(keep)):
                    if failed[i]:  # the same bytes may be another file elsewhere: the path is the row's
                        errors[j] = stamp + str(decode_error[i]).replace(str(self.paths[row_ids[i]]), IMAGE_PATH_MARK)
                columns[ERROR_COLUMN] = pa.array(errors, pa.string())
            tables.append(pa.table(columns))
        if not tables:
            return None
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------
def assemble(
    frame: pd.DataFrame,
    plans: list[MetricPlan],
    cached: dict[str, dict[str, np.ndarray]],
    results: list[pd.DataFrame],
) -> pd.DataFrame:
    """Merge cached and fresh scores into one table: one column per output, and the error text.

    A cached output wins over a fresh one. ``error`` = scan error, decode error, then
    ``"<metric>: <error>"`` per metric scored fresh, joined with '; ' (None when none).
    """
    table = frame.copy()
    n = len(frame)
    fresh = pd.concat(results, ignore_index=True) if results else None
    if fresh is not None and len(fresh):
        fresh = fresh.drop_duplicates("row_id", keep="last")
        ids = fresh["row_id"].to_numpy(dtype=np.int64)
    else:
        fresh, ids = None, np.empty(0, np.int64)
    decode_error = np.full(n, None, dtype=object)
    metric_errors: list[np.ndarray] = []
    for plan in plans:
        was_cached = _cached(cached[plan.metric], plan.metric) if plan.metric in cached else np.zeros(n, bool)
        if plan.metric in cached:  # a cached failure of the image's bytes reads as it did when it happened
            failure = cached[plan.metric][CACHED_ERROR]
            for i in np.flatnonzero(~pd.isna(failure)):  # rows with a cached failure only: few
                decode_error[i] = str(failure[i]).replace(IMAGE_PATH_MARK, str(frame["abs_path"].iat[i]))
        fresh_here = np.zeros(n, dtype=bool)
        fresh_here[ids] = True
        fresh_here &= ~was_cached
        use = fresh_here[ids]  # fresh rows whose output we take
        for key, column in plan.columns.items():
            values = cached[plan.metric][key].copy() if plan.metric in cached else np.full(n, np.nan)
            if fresh is not None:
                values[ids[use]] = fresh[output_column(key)].to_numpy(dtype=np.float64, na_value=np.nan)[use]
            table[column] = values
        errors = np.full(n, None, dtype=object)
        if fresh is not None:
            dec = fresh["decode_error"].to_numpy(dtype=object)
            has_dec = use & _non_empty(dec)
            decode_error[ids[has_dec]] = dec[has_dec]
            err = fresh[stage_error_column(plan.metric)].to_numpy(dtype=object)
            has_err = use & _non_empty(err)
            errors[ids[has_err]] = [f"{plan.metric}: {e}" for e in err[has_err]]
        metric_errors.append(errors)
    parts = [table["error"].to_numpy(dtype=object), decode_error, *metric_errors]
    present = np.logical_or.reduce([~pd.isna(p) for p in parts]) if n else np.zeros(0, bool)
    joined = np.full(n, None, dtype=object)
    for i in np.flatnonzero(present):  # rows with an error only: few
        texts: list[str] = []
        for part in parts:
            text = part[i]
            if not pd.isna(text) and text and text not in texts:
                texts.append(text)
        joined[i] = "; ".join(texts) if texts else None
    table["error"] = pd.Series(joined, dtype=object)
    return table


def _non_empty(values: np.ndarray) -> np.ndarray:
    """True where a text column holds a non-empty string (not None / NaN / '')."""
    values = np.asarray(values, dtype=object)
    return ~pd.isna(values) & (values != "")

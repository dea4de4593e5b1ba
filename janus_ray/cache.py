"""The resume cache: scores keyed by (image content sha256, prompt, metric settings).

Records are columns: ``image_sha256``, ``prompt``, ``settings`` and one float64 ``score:<key>``
column per output (null where a record's metric has no such output), and ``error``: the failure
text of a record whose image bytes cannot be decoded (its scores null; such a failure is the same
on every rerun, so it is not retried). Appends are buffered and
written as one atomic, fsynced Parquet part per few seconds or few thousand rows (the first
batch at once, and everything at ``flush()``), so a driver killed mid-run loses at most the
unflushed rows, which the rerun scores again. ``load()`` reads every part with pyarrow and
compacts them into one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from janus_ray.metrics.weights import RequiredFile
from janus_ray.results import atomic_write

KEY_COLUMNS = ("image_sha256", "prompt", "settings")
#: a record whose image bytes cannot be decoded: scores null, this column the row's error text
ERROR_COLUMN = "error"


#: a cache record's file, as the driver stat'ed it before its bytes were read: its path
#: (``MEMO_PATH``) and ``STAT_FIELDS`` (size, mtime_ns, inode; null when unknown). A file whose
#: path and stat are unchanged holds the same bytes; a copy, a rewrite (rsync writes a new
#: inode, even when it keeps the time) or a touch changes them.
MEMO_PATH = "file_path"
STAT_FIELDS = ("file_size", "file_mtime_ns", "file_ino")


def image_memo(known: pd.DataFrame | None) -> dict[str, tuple[int, int, int, str]]:
    """path -> (size, mtime_ns, inode, sha256) of the files behind the cached records (``ResultCache.load()``),
    for ``table.HashJob``: a file whose stat still matches is not read again. Records written
    before these columns existed (or of files that could not be stat'ed) give no entry."""
    if known is None or known.empty or MEMO_PATH not in known or not all(c in known for c in STAT_FIELDS):
        return {}
    rows = known[[MEMO_PATH, *STAT_FIELDS, "image_sha256"]].dropna()
    rows = rows.drop_duplicates(MEMO_PATH, keep="last")
    stats = [rows[c].to_numpy(dtype=np.int64) for c in STAT_FIELDS]
    return dict(zip(rows[MEMO_PATH].to_numpy(dtype=object).tolist(),
                    zip(*(s.tolist() for s in stats), rows["image_sha256"].to_numpy(dtype=object).tolist())))


def score_column(key: str) -> str:
    """Cache column of one output key (``clipscore`` -> ``score:clipscore``)."""
    return f"score:{key}"


def file_sha256(path: Path, chunk: int = 1 << 20, stop: threading.Event | None = None) -> str:
    """sha256 of a file's bytes; '' when it cannot be read (the row then fails as unreadable) or
    when ``stop`` is set before the end (checked once per ``chunk`` bytes)."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as fh:
            while block := fh.read(chunk):
                if stop is not None and stop.is_set():
                    return ""
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def weights_fingerprint(files: list[RequiredFile], weights_root: Path) -> list[list[Any]]:
    """Cheap identity of the weight files (path under ``weights_root``, size, mtime): a changed
    checkpoint invalidates the cache, a weights root copied or moved with its times (``cp -a``,
    ``rsync -a``, another mount) does not. A file outside the root keeps a relative path too."""
    out = []
    for item in files:
        found = item.resolve()
        if found is not None and found.is_file():
            stat = found.stat()
            out.append([os.path.relpath(found, weights_root), stat.st_size, stat.st_mtime_ns])
        else:
            out.append([os.path.relpath(item.path, weights_root), None, None])
    return out


class ResultCache:
    """Buffered, append-only Parquet parts under ``directory``, plus a memo of weight-file hashes.

    ``flush_rows`` / ``flush_seconds``: a part is written when the buffer holds that many rows or
    the last write is that old; call ``flush()`` at the end (and on the way out of a failed run).
    """

    def __init__(self, directory: Path, flush_rows: int = 4096, flush_seconds: float = 5.0):
        self.directory = Path(directory)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._last_flush: float | None = None  # None: nothing written yet, the first batch goes at once
        self.parts_written = 0

    def parts(self) -> list[Path]:
        # names start with a zero-padded time, so sorted order is write order (newest last)
        return sorted(self.directory.glob("part-*.parquet"))

    def load(self, compact: bool = True) -> pd.DataFrame:
        """Every cached record as a DataFrame (KEY_COLUMNS + ``score:<key>`` float64 columns).

        Later parts win for a repeated key. With ``compact``, several parts (or a part in the
        old JSON ``scores`` format) are rewritten as one, then the old parts are removed.
        Unreadable parts (should not happen: writes are atomic) are skipped.
        """
        parts = self.parts()
        tables, legacy = [], False
        for part in parts:
            try:
                # the file path as a dictionary (pandas categorical): one record per (image, metric)
                # repeats each path once per metric, and a million paths as Python strings each
                # time would cost the driver ~1 GB
                names = pq.read_schema(part).names
                table = pq.read_table(part, read_dictionary=[MEMO_PATH] if MEMO_PATH in names else None)
            except (OSError, pa.ArrowInvalid):
                continue
            if "scores" in table.column_names:  # format of janus_ray <= 0.1.0: one JSON text per record
                table, legacy = _from_json_scores(table), True
            tables.append(table)
        if not tables:
            return pd.DataFrame({name: pd.Series(dtype=object) for name in KEY_COLUMNS})
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        # int64 columns (the files' stat) as nullable Int64: float64 would round a mtime in ns
        frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        frame = frame.drop_duplicates(list(KEY_COLUMNS), keep="last", ignore_index=True)
        if compact and (len(parts) > 1 or legacy):
            self._write(pa.Table.from_pandas(frame, preserve_index=False))
            for part in parts:
                part.unlink(missing_ok=True)
        return frame

    def append(self, records: pa.Table | None) -> None:
        """Buffer ``records`` (see ``janus_ray.table.BatchRecorder``); write a part when due."""
        if records is not None and records.num_rows:
            self._buffer.append(records)
            self._buffered += records.num_rows
        if not self._buffered:
            return
        now = time.monotonic()
        if (
            self._last_flush is None
            or self._buffered >= self.flush_rows
            or now - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Write the buffered records as one part (atomic, fsynced); no-op when empty."""
        self._last_flush = time.monotonic()
        if not self._buffered:
            return
        tables, self._buffer, self._buffered = self._buffer, [], 0
        self._write(pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0])

    def _write(self, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink)
        atomic_write(self.directory / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet", sink.getvalue())
        self.parts_written += 1

    def weights_sha256(self, paths: list[Path]) -> dict[str, str]:
        """sha256 of each weight file (see ``WeightHashes``; memo beside the parts), waited for."""
        return WeightHashes(self.directory, paths).result()


#: the memo of weight-file hashes, beside the resume cache's parts
WEIGHTS_MEMO = "weights_sha256.json"


class WeightHashes:
    """sha256 of weight files for the run's provenance, memoised and computed in threads.

    The memo (``<directory>/weights_sha256.json``: path -> [size, mtime_ns, sha256]) is
    read at construction; a file whose size and mtime_ns match its entry is not read at all (a rerun
    reads no weight byte). The others are hashed in a thread pool started here (hashlib and reads
    release the GIL), so a 23 GB checkpoint is hashed while the run scans, starts Ray and streams,
    several shards at once. ``result()`` waits and writes the memo; ``cancel()`` (a failed run)
    stops the reads at the next chunk and keeps what was finished.

    ``paths``: weight files, absolute (their text is the memo's and the result's key; ``stat`` follows
    links, so a relinked checkpoint is hashed again); missing ones are left out of the result.
    """

    def __init__(self, directory: Path, paths: list[Path], workers: int | None = None):
        self.memo_path = Path(directory) / WEIGHTS_MEMO
        try:
            memo = json.loads(self.memo_path.read_text(encoding="utf-8"))
            self._memo: dict[str, list[Any]] = memo if isinstance(memo, dict) else {}
        except (OSError, ValueError):
            self._memo = {}
        self._stop = threading.Event()
        self._known: dict[str, str] = {}
        self._pending: dict[str, tuple[int, int, Future]] = {}
        missing: list[tuple[str, int, int]] = []
        for path in dict.fromkeys(Path(p) for p in paths):
            try:
                stat = path.stat()
            except OSError:
                continue
            entry = self._memo.get(str(path))
            if isinstance(entry, list) and len(entry) == 3 and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
                self._known[str(path)] = entry[2]
            else:
                missing.append((str(path), stat.st_size, stat.st_mtime_ns))
        self._pool = None
        if missing:
            self._pool = ThreadPoolExecutor(max_workers=workers or min(8, len(missing)),
                                            thread_name_prefix="janus-ray-weights")
            for name, size, mtime in missing:
                self._pending[name] = (size, mtime, self._pool.submit(file_sha256, Path(name), stop=self._stop))

    def result(self) -> dict[str, str]:
        """{path: sha256 hex} of every file given that exists (and could be read); writes the memo when new."""
        try:
            return self._finish(wait=True)
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop hashing (a failed run): unfinished files are left out of the memo."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._finish(wait=False)
            self._pool = None

    def _finish(self, wait: bool) -> dict[str, str]:
        changed = False
        for name, (size, mtime, future) in list(self._pending.items()):
            if not wait and not future.done():
                continue
            digest = None if future.cancelled() else future.result()
            del self._pending[name]
            if digest:  # '' / None: unreadable or stopped, not memoised
                self._known[name] = digest
                self._memo[name] = [size, mtime, digest]
                changed = True
        if changed:
            try:
                atomic_write(self.memo_path, json.dumps(self._memo, indent=1).encode("utf-8"))
            except OSError:  # a read-only cache directory: the hashes are still returned
                pass
        return dict(self._known)


def _from_json_scores(table: pa.Table) -> pa.Table:
    """Old parts (a JSON ``scores`` text per record) -> the column format (read once, then compacted)."""
    scores = pd.DataFrame.from_records([json.loads(text) for text in table["scores"].to_pylist()])
    columns: dict[str, Any] = {name: table[name] for name in KEY_COLUMNS}
    for key in scores.columns:
        columns[score_column(key)] = pa.array(scores[key].to_numpy(dtype="float64", na_value=float("nan")), pa.float64())
    return pa.table(columns)

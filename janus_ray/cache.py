"""The resume cache: scores keyed by (image content sha256, prompt, metric settings).

Each result batch is appended as its own small Parquet file, written atomically, so a driver
killed mid-run loses at most the batch in flight; a rerun reads every part and skips those pairs.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from janus_ray.metrics.weights import RequiredFile
from janus_ray.results import atomic_write

CacheKey = tuple[str, str, str]  # (image sha256, prompt, settings key)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes; '' when it cannot be read (the row then fails as unreadable)."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def weights_fingerprint(files: list[RequiredFile]) -> list[list[Any]]:
    """Cheap identity of the weight files (path, size, mtime): a changed checkpoint invalidates the cache."""
    out = []
    for item in files:
        found = item.resolve()
        if found is not None and found.is_file():
            stat = found.stat()
            out.append([str(found), stat.st_size, stat.st_mtime_ns])
        else:
            out.append([str(item.path), None, None])
    return out


class ResultCache:
    """Append-only Parquet parts under ``directory``, plus a memo of weight-file hashes."""

    SCHEMA = pa.schema([("image_sha256", pa.string()), ("prompt", pa.string()), ("settings", pa.string()), ("scores", pa.string())])

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def load(self) -> dict[CacheKey, dict[str, float]]:
        """Every cached score; unreadable parts (should not happen: writes are atomic) are skipped."""
        known: dict[CacheKey, dict[str, float]] = {}
        for part in sorted(self.directory.glob("part-*.parquet")):
            try:
                table = pq.read_table(part)
            except (OSError, pa.ArrowInvalid):
                continue
            for sha, prompt, settings, scores in zip(*(table[c].to_pylist() for c in self.SCHEMA.names)):
                known[(sha, prompt, settings)] = json.loads(scores)
        return known

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        table = pa.Table.from_pylist(records, schema=self.SCHEMA)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        atomic_write(self.directory / f"part-{uuid.uuid4().hex}.parquet", sink.getvalue())

    def weights_sha256(self, paths: list[Path]) -> dict[str, str]:
        """sha256 of each weight file, memoised by (size, mtime) so a 45 GB checkpoint is hashed once."""
        memo_path = self.directory / "weights_sha256.json"
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}
        out, changed = {}, False
        for path in paths:
            stat = path.stat()
            entry = memo.get(str(path))
            if not entry or entry[:2] != [stat.st_size, stat.st_mtime_ns]:
                entry = [stat.st_size, stat.st_mtime_ns, file_sha256(path)]
                memo[str(path)] = entry
                changed = True
            out[str(path)] = entry[2]
        if changed:
            atomic_write(memo_path, json.dumps(memo, indent=1).encode("utf-8"))
        return out

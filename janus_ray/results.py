"""Per-folder result files and the run summary, all written atomically.

Per folder: ``janus_eval_scores.csv`` (the earlier tool's columns, real CSV quoting, 6 decimals,
last row AVERAGE), ``janus_eval_scores.json`` (per_image + averages + meta) and
``janus_eval_scores.parquet`` (typed, with an ``error`` column). At the output root:
``summary.csv``, ``summary.md`` and ``run.json`` (which folders the run scored, for the report).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from datetime import datetime, timezone
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

RESULT_STEM = "janus_eval_scores"
#: at the output root: the run's folders (input and result directory), time, janus_ray version
RUN_RECORD = "run.json"
#: every file a run (and its report, report/build.py) writes at the output root: no result folder
#: may be one of these paths
ROOT_OUTPUTS = ("summary.csv", "summary.md", RUN_RECORD, "report.html", "report.md", "comparison.csv", "comparison.json")
#: the earlier tool's metric columns, always present (empty when a metric is off or failed)
BASE_COLUMNS = ["HPSv2Score", "VQAScore", "CLIPScore", "ITMScore", "PickScore", "ImageReward"]
ID_COLUMNS = ["prompt_idx", "prompt", "image_path"]


#: the usual extra columns come first, in this order; any other enabled variant follows
PREFERRED_EXTRA_COLUMNS = ["HPSv2.1Score", "PickScore_scaled"]


def score_columns(enabled_columns: Sequence[str]) -> list[str]:
    """The six base columns, then HPSv2.1Score / PickScore_scaled when enabled, then any other."""
    extras = [c for c in enabled_columns if c not in BASE_COLUMNS]
    extras.sort(key=lambda c: PREFERRED_EXTRA_COLUMNS.index(c) if c in PREFERRED_EXTRA_COLUMNS else len(PREFERRED_EXTRA_COLUMNS))
    return BASE_COLUMNS + extras


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it over ``path`` (never half-written).

    The file gets the mode a plain ``open(path, "w")`` would give (0666 minus the umask), not
    mkstemp's 0600: colleagues on a shared cluster must be able to read the results.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_missing(value: Any) -> bool:
    # pd.NA: nullable Int64 / string columns; NaN: pandas 3 ``str`` columns hold NaN for a missing text.
    # +-inf counts as missing too: no score is infinite, and JSON cannot hold it.
    return value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value))


def column_means(table: pd.DataFrame, columns: Sequence[str]) -> dict[str, float | None]:
    """Mean of each column over the rows that have a score (None when no row has one)."""
    means: dict[str, float | None] = {}
    for column in columns:
        values = table[column].dropna() if column in table else pd.Series(dtype=float)
        values = values[np.isfinite(values.astype("float64"))]  # never an infinite mean
        means[column] = float(values.mean()) if len(values) else None
    return means


def _fmt(value: Any) -> str:
    return "" if _is_missing(value) else f"{float(value):.6f}"


def render_csv(table: pd.DataFrame, columns: Sequence[str]) -> str:
    """The per-folder CSV: one row per image, then ``AVERAGE,,,<mean per metric>``.

    Column-at-a-time (pandas' writer, csv-module quoting): a million rows in seconds.
    """
    frame = pd.DataFrame(
        {
            "prompt_idx": pd.array(table["prompt_idx"], dtype="Int64"),
            "prompt": table["prompt"].astype(object).where(table["prompt"].notna(), ""),
            "image_path": table["image_path"],
            **{c: (table[c] if c in table else pd.Series(float("nan"), index=table.index)).astype("float64")
                  .replace([np.inf, -np.inf], np.nan)  # +-inf is written as missing, like NaN
               for c in columns},
        }
    )
    out = io.StringIO()
    frame.to_csv(out, index=False, lineterminator="\n", float_format="%.6f", na_rep="", header=[*ID_COLUMNS, *columns])
    means = column_means(table, columns)
    csv.writer(out, lineterminator="\n").writerow(["AVERAGE", "", "", *(_fmt(means[c]) for c in columns)])
    return out.getvalue()


def _json_texts(values: pd.Series) -> list[str]:
    """Each value of a column as JSON text ('null' for every kind of missing), column at a time."""
    missing = values.isna().to_numpy()
    if pd.api.types.is_bool_dtype(values.dtype):
        texts = np.where(values.to_numpy(dtype=bool, na_value=False), "true", "false").astype(object)
    elif pd.api.types.is_integer_dtype(values.dtype):
        texts = values.to_numpy(dtype=np.int64, na_value=0).astype(str).astype(object)
    elif pd.api.types.is_float_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        # +-inf is missing too: no score is infinite, and JSON cannot hold it (never a failed write)
        missing = missing | ~np.isfinite(numbers)
        numbers = np.where(missing, 0.0, numbers)
        # numpy's float -> str is the shortest round-trip text, as Python's repr (json's own)
        texts = numbers.astype(str).astype(object)
    else:
        encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
        quote = json.encoder.encode_basestring  # the C string encoder json itself uses
        objects = values.to_numpy(dtype=object)
        texts = np.array(["null" if m else quote(v) if type(v) is str else encode(v.item() if hasattr(v, "item") else v)
                          for v, m in zip(objects, missing)], dtype=object)
    texts[missing] = "null"
    return texts.tolist()


def render_json(table: pd.DataFrame, columns: Sequence[str], meta: dict[str, Any]) -> str:
    """``{"per_image": [...], "averages": {...}, "meta": {...}}`` (earlier tool's keys + meta).

    One per-image object per line, each value encoded a column at a time (an indented json.dumps
    of a million rows takes minutes); averages and meta indented.
    """
    keys = [*ID_COLUMNS, *columns, "sample", "error"]
    texts = [
        _json_texts(table[key]) if key in table else ["null"] * len(table)
        for key in keys
    ]
    template = "{" + ", ".join(json.dumps(key, ensure_ascii=False) + ": %s" for key in keys) + "}"
    lines = [template % row for row in zip(*texts)]
    averages = json.dumps(column_means(table, columns), indent=2, ensure_ascii=False, allow_nan=False)
    meta_text = json.dumps(meta, indent=2, ensure_ascii=False, allow_nan=False)
    per_image = "[\n    " + ",\n    ".join(lines) + "\n  ]" if lines else "[]"
    return (
        '{\n  "per_image": ' + per_image
        + ',\n  "averages": ' + averages.replace("\n", "\n  ")
        + ',\n  "meta": ' + meta_text.replace("\n", "\n  ")
        + "\n}"
    )


def parquet_bytes(table: pd.DataFrame, columns: Sequence[str]) -> bytes:
    """The per-image table, typed: ids, scores (float64, null when missing), error text."""
    frame = table[[*ID_COLUMNS, "sample", *columns, "error"]].copy()
    frame["prompt_idx"] = frame["prompt_idx"].astype("Int64")
    frame["sample"] = frame["sample"].astype("Int64")
    for column in columns:
        frame[column] = frame[column].astype("float64")
    # An explicit schema: with no failed row the error column is all None, which pyarrow would
    # otherwise type as `null` (and text columns as string or large_string depending on the dtype).
    schema = pa.schema(
        [
            ("prompt_idx", pa.int64()),
            ("prompt", pa.string()),
            ("image_path", pa.string()),
            ("sample", pa.int64()),
            *[(column, pa.float64()) for column in columns],
            ("error", pa.string()),
        ]
    )
    arrow = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(arrow, sink)
    return sink.getvalue()


def write_folder_results(table: pd.DataFrame, out_dir: Path, columns: Sequence[str], meta: dict[str, Any]) -> list[Path]:
    """Write the three per-folder files; ``table`` has ID_COLUMNS, sample, error and ``columns``."""
    table = table.sort_values(["prompt_idx", "sample", "image_path"], na_position="last", kind="stable")
    for column in columns:
        if column not in table:
            table[column] = float("nan")
    paths = [out_dir / f"{RESULT_STEM}.{ext}" for ext in ("csv", "json", "parquet")]
    atomic_write(paths[0], render_csv(table, columns).encode("utf-8"))
    atomic_write(paths[1], render_json(table, columns, meta).encode("utf-8"))
    atomic_write(paths[2], parquet_bytes(table, columns))
    return paths


def write_summary(rows: list[dict[str, Any]], columns: Sequence[str], root: Path) -> list[Path]:
    """``summary.csv`` / ``summary.md`` at the output root: one row per folder, one column per metric mean."""
    header = ["folder", "images", "failed", *columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row["folder"], row["images"], row["failed"], *(_fmt(row["means"].get(c)) for c in columns)])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["folder"], str(row["images"]), str(row["failed"])]
        cells += [_fmt(row["means"].get(c)) or "–" for c in columns]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    paths = [root / "summary.csv", root / "summary.md"]
    atomic_write(paths[0], buffer.getvalue().encode("utf-8"))
    atomic_write(paths[1], ("\n".join(lines) + "\n").encode("utf-8"))
    return paths


def format_summary_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table for the terminal."""
    header = ["folder", "images", "failed", *columns]
    body = [
        [row["folder"], str(row["images"]), str(row["failed"]), *(_fmt(row["means"].get(c)) or "-" for c in columns)]
        for row in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*line) for line in [header, *body])


def unique_names(dirs: Sequence[Path]) -> list[str]:
    """Display names: each folder's name, extended by parent names until no two are alike."""
    depth = [1] * len(dirs)
    while True:
        names = ["/".join(d.parts[-k:]) for d, k in zip(dirs, depth)]
        clashes = {n for n in names if names.count(n) > 1}
        if not clashes:
            return names
        grown = False
        for i, (d, name) in enumerate(zip(dirs, names)):
            if name in clashes and depth[i] < len(d.parts):
                depth[i] += 1
                grown = True
        if not grown:
            return [str(d) for d in dirs]


def ensure_writable_directory(directory: Path, what: str) -> None:
    """Create ``directory`` (parents too) and check that a file can be created in it.

    Raises ConfigError naming ``what`` (the flag or role, e.g. "--output-dir"): "Cannot create
    <what> directory ..." or "Cannot write to <what> directory ...: <reason>."."""
    from janus_ray.errors import ConfigError

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create {what} directory {directory}: {exc.strerror or exc}.") from None
    reason = unwritable_reason(directory)
    if reason:
        raise ConfigError(f"Cannot write to {what} directory {directory}: {reason}.")


def unwritable_reason(directory: Path) -> str | None:
    """Why a file cannot be created in the existing ``directory`` (None: it can, or the directory
    does not exist: the scan reports a missing folder). A file is created and removed to find out,
    as permission bits miss what root may not do (an immutable directory, a read-only mount)."""
    if not directory.is_dir():
        return None
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".janus_ray_write_check"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def write_run_record(root: Path, folders: Sequence[tuple[str | Path, str | Path]]) -> Path:
    """``run.json`` at the output root: ``{"janus_ray_version", "time", "output_root", "folders"}``.

    ``folders``: (input folder, its result directory) per scored folder, in run order; written as
    absolute paths under ``folders[i]["input"]`` / ``["results"]``. ``janus-ray report`` compares
    exactly these folders (not whatever result files happen to lie under the root).
    """
    from janus_ray import __version__

    document = {
        "janus_ray_version": __version__,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "output_root": str(Path(root).resolve()),
        "folders": [{"input": str(Path(i).resolve()), "results": str(Path(r).resolve())} for i, r in folders],
    }
    path = Path(root) / RUN_RECORD
    atomic_write(path, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return path

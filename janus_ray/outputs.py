"""The last step of ``evaluate``: the per-folder files, the summary files and the terminal summary.

``write_outputs(WriteRequest(...))`` takes the assembled table (one row per pair, one column per
metric output) and writes what results.py formats; it returns the ``RunResult``. No Ray here.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import pandas as pd

from janus_ray.manifest import FolderScan
from janus_ray.results import (
    RESULT_STEM,
    RUN_RECORD,
    column_means,
    format_summary_table,
    score_columns,
    unique_names,
    write_folder_results,
    write_run_record,
    write_summary,
)


class PlannedMetric(Protocol):
    """What the writer reads of a ``pipeline.MetricPlan``."""

    metric: str
    columns: dict[str, str]  # output key -> result column; the primary key is the metric's name


@dataclass
class RunResult:
    """What ``evaluate`` produced."""

    output_root: Path
    folder_outputs: dict[str, list[Path]]
    summary_paths: list[Path]
    table: pd.DataFrame
    n_rows: int
    n_failed: int
    n_cached: int
    metric_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: diagnostics of the per-metric layout: the pixel stores' summaries (bytes put, keys still held,
    #: waits), one per phase whose pixels went through stores; empty otherwise
    pixel_stores: list[dict[str, Any]] = field(default_factory=list)
    #: ``evaluate(then=...)``'s follow-up (a concurrent.futures.Future), None without one
    then: Any = None


@dataclass
class WriteRequest:
    """Everything ``write_outputs`` needs.

    ``table``: the assembled frame (``folder``, id columns, one float column per metric output, NaN
    = not scored); ``out_dirs``: input folder (as in ``scans``) -> its result directory;
    ``meta``: run provenance written into every JSON file (per-folder counts are added here).
    """

    table: pd.DataFrame
    plans: list[PlannedMetric]
    scans: list[FolderScan]
    output_root: Path
    out_dirs: dict[str, Path]
    n_cached: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    stream: IO[str] = field(default_factory=lambda: sys.stderr)


def write_outputs(request: WriteRequest) -> RunResult:
    """Per-folder files, summary files, and the terminal summary (printed to ``request.stream``)."""
    table, plans, scans, out_dirs, stream = request.table, request.plans, request.scans, request.out_dirs, request.stream
    columns = score_columns([c for p in plans for c in p.columns.values()])
    for column in columns:  # the earlier tool's six columns exist even when a metric is off
        if column not in table:
            table[column] = np.nan
    primary_columns = [p.columns[p.metric] for p in plans]
    warn_dropped_scores(table, columns, scans, out_dirs, stream)
    folder_outputs, summary_rows = {}, []
    all_counts = {}
    # each folder's name, with parents where two share one (model_x/images, model_y/images)
    names = dict(zip([scan.folder for scan in scans], unique_names([Path(scan.folder) for scan in scans])))
    for scan in scans:
        part = table[table["folder"] == scan.folder]
        counts = {
            "images": int(len(part)),
            "scored": {p.metric: int(part[p.columns[p.metric]].notna().sum()) for p in plans},
            "failed": {p.metric: int(part[p.columns[p.metric]].isna().sum()) for p in plans},
            "convention": scan.convention,
            "prompts_without_image": scan.prompts_without_image,
        }
        all_counts[scan.folder] = counts
        folder_meta = {**request.meta, "counts": counts}
        folder_outputs[scan.folder] = write_folder_results(part.copy(), out_dirs[scan.folder], columns, folder_meta)
        failed_rows = int(part[primary_columns].isna().any(axis=1).sum()) if primary_columns else 0
        summary_rows.append(
            {"folder": names[scan.folder], "images": len(part), "failed": failed_rows,
             "means": column_means(part, columns)}
        )
    summary_paths = write_summary(summary_rows, [c for c in columns if table[c].notna().any()], request.output_root)
    warn_replaced_run_record(request.output_root, [(scan.folder, out_dirs[scan.folder]) for scan in scans], stream)
    write_run_record(request.output_root, [(scan.folder, out_dirs[scan.folder]) for scan in scans])  # what `report` compares
    shown = [c for c in columns if c in table and table[c].notna().any()]
    print("\n" + format_summary_table(summary_rows, shown), file=stream)
    n_failed = int(table[primary_columns].isna().any(axis=1).sum()) if primary_columns else 0
    print(f"\n[janus-ray] results: {', '.join(str(out_dirs[s.folder]) for s in scans)}", file=stream)
    print(f"[janus-ray] summary: {summary_paths[0]}", file=stream)
    print(f"[janus-ray] {len(table)} pair(s), {n_failed} with at least one failed metric", file=stream)
    return RunResult(
        output_root=request.output_root,
        folder_outputs=folder_outputs,
        summary_paths=summary_paths,
        table=table,
        n_rows=len(table),
        n_failed=n_failed,
        n_cached=request.n_cached,
        metric_counts=all_counts,
    )


def _earlier_run_record(root: Path) -> dict[str, str] | None:
    """The output root's run.json (an earlier run's): result folder -> its input folder (resolved)."""
    try:
        document = json.loads((Path(root) / RUN_RECORD).read_text(encoding="utf-8"))
        return {str(Path(f["results"]).resolve()): str(f["input"]) for f in document["folders"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def warn_replaced_results(root: Path, folders: list[tuple[str | Path, Path]], stream) -> list[str]:
    """Warn, before the scoring, when a result folder this run writes held the results of another
    input folder by the output root's run.json (same name: an `--output-dir` reused for other inputs;
    its files will hold this input's rows). ``folders``: (input folder, result folder) of this run.
    Returns those result folders."""
    earlier = _earlier_run_record(root) or {}
    replaced = []
    for inp, results in folders:
        results, inp = str(Path(results).resolve()), str(Path(inp).resolve())
        if results in earlier and str(Path(earlier[results]).resolve()) != inp:
            replaced.append(results)
            print(f"[janus-ray] warning: {results} holds the results of {earlier[results]} (an earlier run, by "
                  f"{Path(root) / RUN_RECORD}); this run replaces them with those of {inp}. The earlier scores "
                  "stay in the resume cache: rerun the earlier command to write them back, or give each set of "
                  "inputs its own --output-dir (Ctrl-C now leaves the earlier files as they are).", file=stream, flush=True)
    return replaced


def warn_replaced_run_record(root: Path, folders: list[tuple[str | Path, Path]], stream) -> list[str]:
    """Warn when the output root's run.json (an earlier run's) lists result folders this run does
    not write (the new run.json, summary and report leave them out). ``folders``: (input folder,
    result folder) of this run. Returns the result folders left out."""
    earlier = _earlier_run_record(root)
    if earlier is None:
        return []
    now = {str(Path(d).resolve()) for _, d in folders}
    left_out = [d for d in earlier if d not in now]
    if left_out:
        shown = ", ".join(left_out[:3]) + (f", ... ({len(left_out) - 3} more)" if len(left_out) > 3 else "")
        print(f"[janus-ray] warning: {Path(root) / RUN_RECORD} of an earlier run listed {len(left_out)} result "
              f"folder(s) this run does not score ({shown}): this run's summary and report leave them out (their "
              "files stay; `janus-ray report FOLDER...` compares any result folders, or use another --output-dir).",
              file=stream)
    return left_out


def dropped_score_columns(parquet_path: Path, columns: list[str]) -> list[str]:
    """Which of ``columns`` hold at least one score in an existing result Parquet file.

    Reads the footer's row-group statistics only (null counts), never the data; a missing or
    unreadable file holds none.
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(parquet_path).metadata
    except (OSError, ValueError):  # no earlier file, or not one of ours
        return []
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    held = []
    for column in columns:
        if column not in names:
            continue
        index = names.index(column)
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(index).statistics
            rows = meta.row_group(group).num_rows
            if stats is None or not stats.has_null_count or stats.null_count < rows:
                held.append(column)
                break
    return held


def warn_dropped_scores(table: pd.DataFrame, columns: list[str], scans: list[FolderScan],
                        out_dirs: dict[str, Path], stream: IO[str]) -> None:
    """Warn when this run's files replace scores an earlier run wrote there (a rerun with fewer
    --metrics): the columns this run leaves empty are checked in each folder's existing Parquet."""
    empty = [c for c in columns if not table[c].notna().any()]
    if not empty:
        return
    lost: dict[str, list[str]] = {}
    for scan in scans:
        for column in dropped_score_columns(out_dirs[scan.folder] / f"{RESULT_STEM}.parquet", empty):
            lost.setdefault(column, []).append(Path(scan.folder).name)
    if lost:
        by_folders: dict[tuple[str, ...], list[str]] = {}  # one clause per set of folders
        for column, folders in lost.items():
            by_folders.setdefault(tuple(folders), []).append(column)
        print(
            "[janus-ray] warning: the result files of "
            + "; ".join(f"{', '.join(folders)} held {', '.join(columns)} scores" for folders, columns in by_folders.items())
            + " from an earlier run; this run does not compute them (not in --metrics), so those columns are"
            " now empty. Their scores stay in the resume cache: rerun with those metrics added to write them back.",
            file=stream,
        )

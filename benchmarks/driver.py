"""Driver mode: the eval driver's own code at N rows, with a stub in place of Ray and the models.

    python -m benchmarks.driver --rows 1000000 --out driver.json

Runs, timed, what ``janus_ray.pipeline.evaluate`` runs on the driver: the manifest frame
(``janus_ray.table.manifest_frame``; content hashes given, as file hashing is I/O measured
elsewhere), the resume cache load and lookup (half the rows already cached), the rows to stream,
one result batch at a time (cache records, buffered cache appends, progress), the assembly and the
per-folder result files (``write_outputs``). The stub makes each result batch from the rows it is
given (random scores); its own time is measured and subtracted. Peak RSS is this process's.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class StubPlan:
    """The plan attributes the driver code reads."""

    metric: str
    columns: dict[str, str]
    settings_key: str
    batch_size: int = 64
    options: dict = field(default_factory=dict)


PLANS = {
    "pickscore": StubPlan("pickscore", {"pickscore": "PickScore"}, "stub-pick"),
    "clipscore": StubPlan("clipscore", {"clipscore": "CLIPScore"}, "stub-clip"),
}


def synthetic_scans(n_rows: int, n_folders: int, root: Path):
    """FolderScans of ``n_rows`` rows (no files: the driver code only reads the row fields)."""
    from janus_ray.manifest import FolderScan, ManifestRow

    per_folder = -(-n_rows // n_folders)
    scans = []
    for f in range(n_folders):
        folder = str(root / f"variant_{f}")
        count = min(per_folder, n_rows - f * per_folder)
        rows = [ManifestRow(folder=folder, prompt_idx=i, prompt=f"prompt number {i} of the benchmark",
                            image_path=f"{folder}/{i:07d}.jpg", rel_path=f"{i:07d}.jpg", sample=0)
                for i in range(max(0, count))]
        scans.append(FolderScan(folder=folder, convention="sidecar-txt", rows=rows, warnings=[]))
    return scans


def stub_results(rows: pd.DataFrame, plans: list[StubPlan], rng: np.random.Generator) -> pd.DataFrame:
    """What ``stream_scores`` hands the driver for these rows: ids, scores, errors, seconds."""
    from janus_ray.actors.decode_stage import stage_error_column
    from janus_ray.actors.metric_actor import output_column, time_column

    n = len(rows)
    batch = {"row_id": rows["row_id"].to_numpy(), "decode_error": np.full(n, "", dtype=object)}
    for plan in plans:
        for key in plan.columns:
            batch[output_column(key)] = rng.random(n)
        batch[stage_error_column(plan.metric)] = np.full(n, "", dtype=object)
        batch[time_column(plan.metric)] = np.full(n, 1e-3)
    return pd.DataFrame(batch)


def run(n_rows: int, n_folders: int, metrics: list[str], batch_rows: int, work: Path,
        cached_fraction: float = 0.5) -> dict:
    from janus_ray.cache import ResultCache
    from janus_ray.outputs import WriteRequest, write_outputs
    from janus_ray.pipeline import Progress
    from janus_ray.table import BatchRecorder, assemble, dataset_rows, manifest_frame, select_todo

    plans = [PLANS[m] for m in metrics]
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    scans = synthetic_scans(n_rows, n_folders, work / "inputs")
    shas = np.array([f"{i:064x}" for i in range(n_rows)], dtype=object)
    setup_s = time.perf_counter() - t
    cache_dir = work / "cache"
    # Setup (untimed): a previous run cached the first `cached_fraction` of the rows.
    frame = manifest_frame(scans, shas)
    todo0 = {p.metric: np.arange(n_rows) < int(n_rows * cached_fraction) for p in plans}
    seed_cache = ResultCache(cache_dir, flush_rows=10**9, flush_seconds=1e9)
    rows0 = dataset_rows(frame, todo0)
    seed_cache.append(BatchRecorder(frame, plans, todo0).record(stub_results(rows0, plans, rng)))
    seed_cache.flush()
    del frame, rows0, seed_cache

    stream = io.StringIO()
    marks: dict[str, float] = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    frame = manifest_frame(scans, shas)
    marks["manifest_frame"] = time.perf_counter()
    cache = ResultCache(cache_dir)
    known = cache.load()
    marks["cache_load"] = time.perf_counter()
    todo, cached, n_cached = select_todo(frame, plans, known)
    del known
    rows = dataset_rows(frame, todo)
    marks["select_todo_and_rows"] = time.perf_counter()
    results: list[pd.DataFrame] = []
    recorder = BatchRecorder(frame, plans, todo)
    progress = Progress(plans, {m: int(f.sum()) for m, f in todo.items()}, stream)
    per_batch, per_batch_cpu, stub_s, stub_cpu = [], [], 0.0, 0.0
    for start in range(0, len(rows), batch_rows):
        t, c = time.perf_counter(), time.process_time()
        batch = stub_results(rows.iloc[start : start + batch_rows], plans, rng)
        t1, c1 = time.perf_counter(), time.process_time()
        stub_s, stub_cpu = stub_s + t1 - t, stub_cpu + c1 - c
        cache.append(recorder.record(batch))  # the on_batch of evaluate()
        results.append(batch)
        progress.update(batch, todo)
        per_batch.append(time.perf_counter() - t1)
        per_batch_cpu.append(time.process_time() - c1)
    cache.flush()
    marks["result_batches"] = time.perf_counter()
    table = assemble(frame, plans, cached, results)
    marks["assemble"] = time.perf_counter()
    out_dirs = {scan.folder: work / "out" / Path(scan.folder).name for scan in scans}
    write_outputs(WriteRequest(table=table, plans=plans, scans=scans, output_root=work / "out", out_dirs=out_dirs,
                               n_cached=n_cached, meta={"bench": "driver"}, stream=stream))
    marks["write_outputs"] = time.perf_counter()
    total = marks["write_outputs"] - started
    cpu_total = time.process_time() - cpu_started - stub_cpu
    steps, previous = {}, started
    for name, at in marks.items():
        steps[name] = at - previous - (stub_s if name == "result_batches" else 0.0)
        previous = at
    return {
        "rows": n_rows,
        "folders": n_folders,
        "metrics": metrics,
        "cached_rows_per_metric": int(n_rows * cached_fraction),
        "result_batches": len(per_batch),
        "batch_rows": batch_rows,
        "driver_s": total - stub_s,
        # CPU seconds of this (single-threaded) driver: on a machine shared with other work, wall
        # time also counts the waits for a CPU
        "driver_cpu_s": cpu_total,
        "stub_s": stub_s,
        "steps_s": steps,
        "per_batch_ms_mean": 1e3 * float(np.mean(per_batch)) if per_batch else None,
        "per_batch_ms_median": 1e3 * float(np.median(per_batch)) if per_batch else None,
        "per_batch_cpu_ms_median": 1e3 * float(np.median(per_batch_cpu)) if per_batch_cpu else None,
        "cache_parts_written": cache.parts_written,
        "setup_s": setup_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.driver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--folders", type=int, default=6)
    parser.add_argument("--metrics", nargs="+", default=["pickscore"], choices=sorted(PLANS))
    parser.add_argument("--batch-rows", type=int, default=1024, help="rows per result batch (default 1024)")
    parser.add_argument("--work-dir")
    parser.add_argument("--out", help="JSON result file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="janus_ray_driver_", dir=args.work_dir) as tmp:
        result = run(args.rows, args.folders, args.metrics, args.batch_rows, Path(tmp))
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

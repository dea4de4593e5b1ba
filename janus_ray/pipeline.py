"""The eval job: manifest -> one Ray Dataset -> decode stage -> one actor pool per metric -> files.

Only this module (and ``janus_ray/actors``) imports ray. The driver builds the manifest of every
folder, skips pairs already in the resume cache, streams the rest through Ray Data, appends each
result batch to the cache as it arrives, and finally writes each folder's files atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from janus_ray import __version__
from janus_ray.actors.decode_stage import DecodeStage, stage_error_column
from janus_ray.actors.fused_stage import FusedStage
from janus_ray.actors.metric_actor import MetricActor, output_column, time_column
from janus_ray.cache import ResultCache, weights_fingerprint
from janus_ray.config import RunConfig
from janus_ray.errors import ConfigError
from janus_ray.manifest import build_manifest, load_prompts
from janus_ray.metrics import get_scorer_class
from janus_ray.metrics.weights import check_required
from janus_ray.results import column_means, format_summary_table, score_columns, write_folder_results, write_run_record, write_summary
from janus_ray.table import BatchRecorder, HashJob, assemble, dataset_rows, manifest_frame, rows_per_block, select_todo

log = logging.getLogger("janus_ray")


@dataclass
class MetricPlan:
    """How one metric runs: which scorer, where, how big its batches and pool are."""

    metric: str
    scorer: str
    options: dict[str, Any]
    columns: dict[str, str]  # output key -> result column
    device: str
    dtype: str | None
    batch_size: int
    num_gpus: float
    num_cpus: float
    replicas: int
    resources: dict[str, float]
    settings_key: str = ""
    tf32: bool = False  # opt-in TF32 matmuls (CUDA only)

    def describe(self) -> str:
        where = f"{self.num_gpus:g} GPU" if self.num_gpus else f"{self.num_cpus:.2f} CPU"
        extra = f", resources {self.resources}" if self.resources else ""
        return (
            f"  {self.metric:<12} {self.replicas} replica(s) x {where}{extra}, batch {self.batch_size}, "
            f"device {self.device}, dtype {self.dtype or 'reference default'}"
        )


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


# ---------------------------------------------------------------------------------------------
# Ray setup and planning
# ---------------------------------------------------------------------------------------------
def init_ray(address: str | None) -> bool:
    """Join ``address`` (or RAY_ADDRESS), else start an embedded local Ray; True if embedded."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # address="local": a new instance of our own; without it ray.init attaches to any local
        # cluster that someone else started with `ray start` on this machine.
        ray.init(address="local", include_dashboard=False, log_to_driver=True, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
    return not address


def check_placement(plans: list[MetricPlan], resources: dict[str, float], can_grow: bool, stream) -> None:
    """Refuse (fixed cluster) or warn (autoscaling cluster) when a plan asks for what no node has:
    such actors would wait forever."""
    for plan in plans:
        wanted = {"GPU": plan.num_gpus, **plan.resources}
        for name, amount in wanted.items():
            if amount and resources.get(name, 0.0) < min(amount, 1.0):
                message = (
                    f"{plan.metric} asks for {amount:g} {name} per actor but the Ray cluster has "
                    f"{resources.get(name, 0.0):g} {name}."
                )
                if not can_grow:
                    raise ConfigError(message + " Remove that setting or run on a cluster that has it.")
                print(f"[janus-ray] warning: {message} Waiting for the autoscaler to add such a node.", file=stream)


def plan_metrics(config: RunConfig, cluster_gpus: float, cluster_cpus: float) -> list[MetricPlan]:
    """Turn the config into per-metric resource plans for the cluster at hand."""
    use_gpus = cluster_gpus > 0 and config.device != "cpu"
    if config.device == "cuda" and cluster_gpus == 0:
        raise ConfigError("--device cuda requested but the Ray cluster has no GPUs.")
    # Logical CPUs only (threads are set separately); 1 CPU stays free for Ray Data's own small
    # tasks (column projection, output) so results stream to the driver instead of arriving at the end.
    cpu_share = max(0.05, (cluster_cpus - 1.5) / max(1, len(config.metrics)))
    plans = []
    for metric in config.metrics:
        spec = config.spec(metric)
        cls = get_scorer_class(metric)
        options = dict(spec.options)
        num_gpus = spec.resolved_num_gpus(metric, use_gpus)
        plans.append(
            MetricPlan(
                metric=metric,
                scorer=metric,
                options=options,
                columns=cls.output_columns(**options),
                device="cuda" if num_gpus > 0 else "cpu",
                dtype=spec.dtype or config.dtype,
                batch_size=spec.resolved_batch_size(metric, num_gpus > 0),
                num_gpus=num_gpus,
                num_cpus=1.0 if num_gpus > 0 else round(cpu_share, 2),
                replicas=spec.replicas,
                resources=dict(spec.resources),
                tf32=config.tf32 and num_gpus > 0,
            )
        )
    return plans


def settings_key(plan: MetricPlan, weights_root: Path) -> str:
    """Identity of 'the same metric and settings' for resume: scorer, options, device, dtype, weights."""
    cls = get_scorer_class(plan.scorer)
    files = cls.required_files(weights_root, **plan.options)
    payload = {
        "scorer": plan.scorer,
        "options": plan.options,
        "device": plan.device,
        "dtype": plan.dtype,
        "weights": weights_fingerprint(files),
        "janus_ray": __version__,
    }
    if plan.tf32:  # only when on: the keys of default runs stay what they were
        payload["tf32"] = True
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The Ray part
# ---------------------------------------------------------------------------------------------
def stream_scores(
    rows: pd.DataFrame,
    plans: list[MetricPlan],
    config: RunConfig,
    on_batch: Callable[[pd.DataFrame], None],
    journal_dir: str | None = None,
) -> None:
    """Stream ``rows`` through decoding and every metric's actors; call ``on_batch`` per result batch.

    ``journal_dir``: the run's crash journal (actors/journal.py), so that no row is retried forever.
    """
    import ray

    cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
    # Blocks of many batches (not one decode batch of 16): each block costs a task per stage, a
    # projection task and a result batch on the driver.
    n_blocks = max(1, math.ceil(len(rows) / rows_per_block(plans, config.decode_batch_size, len(rows))))
    step = math.ceil(len(rows) / n_blocks)
    ds = ray.data.from_pandas([rows.iloc[i : i + step] for i in range(0, len(rows), step)])
    if use_fused_layout(plans, config):
        ds = _fused_stage(ds, plans, config, cluster_cpus, journal_dir)
    else:
        ds = _separate_stages(ds, plans, config, cluster_cpus, journal_dir)
    keep = ["row_id", "decode_error"]
    for plan in plans:
        keep += [output_column(k) for k in plan.columns] + [stage_error_column(plan.metric), time_column(plan.metric)]
    # num_cpus=0: the projection is trivial and must never wait for a CPU the actors hold, or
    # results would reach the driver (progress, resume cache) only at the end of the run.
    ds = ds.select_columns(keep, num_cpus=0)
    for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
        on_batch(batch)


def use_fused_layout(plans: list[MetricPlan], config: RunConfig) -> bool:
    return config.cpu_layout == "fused" and not any(p.num_gpus for p in plans)


def fused_replicas(config: RunConfig, cluster_cpus: float) -> int:
    """One single-threaded fused actor per CPU: decoding in one overlaps model work in another
    (measured on 2 CPUs, 6x200 tiny images: 111.5 s with 1 actor x 2 threads, 84.5 s with 2 x 1)."""
    return config.cpu_replicas or max(1, int(cluster_cpus))


def _decode_kwargs(plans: list[MetricPlan], config: RunConfig, journal_dir: str | None = None) -> dict[str, Any]:
    weights_root = str(Path(config.weights_root).resolve())
    metrics = {p.metric: {"scorer": p.scorer, "weights_root": weights_root, "options": p.options} for p in plans}
    return {"metrics": metrics, "max_pixels": config.max_image_pixels, "journal_dir": journal_dir}


def _metric_kwargs(plan: MetricPlan, config: RunConfig, torch_threads: int | None,
                   journal_dir: str | None = None) -> dict[str, Any]:
    return {
        "metric": plan.metric,
        "scorer": plan.scorer,
        "weights_root": str(Path(config.weights_root).resolve()),
        "device": plan.device,
        "dtype": plan.dtype,
        "options": plan.options,
        "torch_threads": torch_threads,
        "journal_dir": journal_dir,
        "tf32": plan.tf32,
    }


def _fused_stage(ds, plans: list[MetricPlan], config: RunConfig, cluster_cpus: float, journal_dir: str | None = None):
    """CPU only: each actor decodes and runs every metric (see actors/fused_stage.py)."""
    replicas = fused_replicas(config, cluster_cpus)
    threads = max(1, int(cluster_cpus // replicas))
    return ds.map_batches(
        FusedStage,
        fn_constructor_kwargs={
            "decode": _decode_kwargs(plans, config, journal_dir),
            "metrics": [_metric_kwargs(p, config, None, journal_dir) for p in plans],
            "torch_threads": threads,
        },
        batch_size=max(p.batch_size for p in plans),
        batch_format="numpy",
        concurrency=replicas,
        num_cpus=max(0.1, (cluster_cpus - 1.0) / replicas),  # 1 CPU left for Ray Data's own tasks
        # Ray Data's actor pools default to max_restarts=-1 / max_task_retries=-1: a crashed actor is
        # restarted and its batch retried, so no row is lost or doubled (the kill test checks).
    )


def _separate_stages(ds, plans: list[MetricPlan], config: RunConfig, cluster_cpus: float, journal_dir: str | None = None):
    """A CPU decode pool feeding one actor pool per metric (the GPU layout)."""
    any_gpu = any(p.num_gpus for p in plans)
    max_decoders = max(1, int(cluster_cpus - len(plans))) if any_gpu else 1
    ds = ds.map_batches(
        DecodeStage,
        fn_constructor_kwargs=_decode_kwargs(plans, config, journal_dir),
        batch_size=config.decode_batch_size,
        batch_format="numpy",
        concurrency=(1, max_decoders),
        num_cpus=1.0 if any_gpu else 0.5,
    )
    threads = max(1, int(cluster_cpus // max(1, len(plans))))
    for plan in plans:
        ds = ds.map_batches(
            MetricActor,
            fn_constructor_kwargs=_metric_kwargs(plan, config, threads if plan.num_gpus == 0 else None, journal_dir),
            batch_size=plan.batch_size,
            batch_format="numpy",
            concurrency=plan.replicas,
            num_gpus=plan.num_gpus or None,
            num_cpus=plan.num_cpus,
            resources=plan.resources or None,
            # Same restart/retry defaults as above: the kill test covers this layout too.
        )
    return ds


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------
class Progress:
    """One line per metric: done / total, wall-clock images/s, and images/s of the actors' own time."""

    def __init__(self, plans: list[MetricPlan], totals: dict[str, int], stream=sys.stderr):
        self.plans, self.totals, self.stream = plans, totals, stream
        self.done = dict.fromkeys(totals, 0)
        self.failed = dict.fromkeys(totals, 0)
        self.busy = dict.fromkeys(totals, 0.0)
        self.started = time.perf_counter()
        self.last_print = 0.0

    def update(self, batch: pd.DataFrame, todo: dict[str, np.ndarray]) -> None:
        """``todo[metric]``: bool per frame row (``row_id`` indexes it)."""
        row_ids = batch["row_id"].to_numpy(dtype=np.int64)
        for plan in self.plans:
            mine = todo[plan.metric][row_ids]
            self.done[plan.metric] += int(mine.sum())
            self.failed[plan.metric] += int(batch[output_column(plan.scorer)].isna().to_numpy()[mine].sum())
            self.busy[plan.metric] += float(batch[time_column(plan.metric)].sum())
        now = time.perf_counter()
        if now - self.last_print > 5 or all(self.done[m] >= self.totals[m] for m in self.totals):
            self.last_print = now
            self.print()

    def print(self) -> None:
        elapsed = max(1e-9, time.perf_counter() - self.started)
        for plan in self.plans:
            m = plan.metric
            actor_rate = self.done[m] / self.busy[m] if self.busy[m] else 0.0
            print(
                f"[janus-ray] {m:<12} {self.done[m]:>6}/{self.totals[m]:<6} {self.done[m] / elapsed:8.2f} img/s"
                f" (actors busy: {actor_rate:.2f} img/s per replica)  failed {self.failed[m]}",
                file=self.stream,
                flush=True,
            )


def output_dirs(config: RunConfig) -> tuple[Path, dict[str, Path]]:
    """(output root, per-folder output dir). Default: each folder itself, root = their common parent."""
    folders = [Path(f).resolve() for f in config.folders]
    if config.output_dir:
        root = Path(config.output_dir).resolve()
        names = [f.name for f in folders]
        if len(set(names)) != len(names):
            raise ConfigError(f"Input folders share a name ({names}); cannot map them into one --output-dir.")
        return root, {str(f): root / f.name for f in folders}
    root = Path(os.path.commonpath(folders)) if len(folders) > 1 else folders[0].parent
    return root, {str(f): f for f in folders}


def evaluate(config: RunConfig, stream=sys.stderr) -> RunResult:
    """Run the whole eval job described by ``config`` and write every result file."""
    config.validate()
    weights_root = Path(config.weights_root).resolve()
    for metric in config.metrics:  # fail fast, before Ray starts, on a missing weight file
        cls = get_scorer_class(metric)
        check_required(cls.required_files(weights_root, **config.spec(metric).options), metric)
    prompts = load_prompts(config.prompt_json) if config.prompt_json else None
    config.folders = [str(Path(f).resolve()) for f in config.folders]
    scans = build_manifest(config.folders, prompts, all_samples=config.all_samples, limit=config.limit)
    for scan in scans:
        print(f"[janus-ray] {scan.folder}: {scan.convention}, {len(scan.rows)} image(s)", file=stream)
        for warning in scan.warnings:
            print(f"[janus-ray]   warning: {warning}", file=stream)
    output_root, out_dirs = output_dirs(config)
    # content hashes in a thread pool, overlapping the Ray start
    hashes = HashJob([row.image_path for scan in scans for row in scan.rows])

    embedded = init_ray(config.ray_address)
    import ray

    resources = ray.cluster_resources()
    plans = plan_metrics(config, resources.get("GPU", 0.0), resources.get("CPU", 1.0))
    check_placement(plans, resources, can_grow=not embedded and config.ray_address is not None, stream=stream)
    for plan in plans:
        plan.settings_key = settings_key(plan, weights_root)
    print("[janus-ray] plan:\n" + "\n".join(p.describe() for p in plans), file=stream)
    if use_fused_layout(plans, config):
        replicas = fused_replicas(config, resources.get("CPU", 1.0))
        print(f"[janus-ray] no GPUs: decode + all metrics fused in {replicas} CPU actor(s) "
              "(cpu_layout='per-metric' for one pool per metric)", file=stream)

    frame = manifest_frame(scans, hashes)
    cache = ResultCache(Path(config.cache_dir) if config.cache_dir else output_root / ".janus_ray_cache")
    known = cache.load() if config.resume else None
    todo, cached, n_cached = select_todo(frame, plans, known)
    del known
    rows = dataset_rows(frame, todo)
    print(f"[janus-ray] {len(frame)} pair(s), {len(rows)} to score, resume cache hits: {n_cached}", file=stream)

    results: list[pd.DataFrame] = []
    recorder = BatchRecorder(frame, plans, todo)
    progress = Progress(plans, {m: int(flags.sum()) for m, flags in todo.items()}, stream)

    def on_batch(batch: pd.DataFrame) -> None:
        cache.append(recorder.record(batch))
        results.append(batch)
        progress.update(batch, todo)

    # The crash journal lives beside the resume cache, one directory per run (actors/journal.py).
    journal = cache.directory / "inflight" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        if len(rows):
            stream_scores(rows, plans, config, on_batch, journal_dir=str(journal))
    finally:
        cache.flush()  # what was scored stays cached even when the run fails
        shutil.rmtree(journal, ignore_errors=True)
    table = assemble(frame, plans, cached, results)
    meta = run_meta(config, plans, weights_root, cache)
    return write_outputs(config, table, plans, scans, output_root, out_dirs, n_cached, meta, stream)


def run_meta(config: RunConfig, plans: list[MetricPlan], weights_root: Path, cache: ResultCache) -> dict[str, Any]:
    """Provenance written into every JSON result file (per-folder counts are added by the caller)."""
    import ray
    import torch
    import transformers

    metrics = {}
    for plan in plans:
        cls = get_scorer_class(plan.scorer)
        files = [f.resolve() for f in cls.required_files(weights_root, **plan.options)]
        metrics[plan.metric] = {
            **cls.metadata(),
            "options": plan.options,
            "columns": plan.columns,
            "device": plan.device,
            "dtype": plan.dtype or ("float32" if plan.device == "cpu" else cls.cuda_dtype),
            "weights_sha256": cache.weights_sha256([f for f in files if f is not None and f.is_file()]),
        }
    return {
        "janus_ray_version": __version__,
        "metrics": metrics,
        "versions": {"ray": ray.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "config": {k: v for k, v in asdict(config).items() if k != "metric_specs"},
    }


def write_outputs(config, table, plans, scans, output_root, out_dirs, n_cached, meta, stream) -> RunResult:
    """Per-folder files, summary files, and the terminal summary."""
    columns = score_columns([c for p in plans for c in p.columns.values()])
    for column in columns:  # the earlier tool's six columns exist even when a metric is off
        if column not in table:
            table[column] = np.nan
    primary_columns = [p.columns[p.scorer] for p in plans]
    folder_outputs, summary_rows = {}, []
    all_counts = {}
    for scan in scans:
        part = table[table["folder"] == scan.folder]
        counts = {
            "images": int(len(part)),
            "scored": {p.metric: int(part[p.columns[p.scorer]].notna().sum()) for p in plans},
            "failed": {p.metric: int(part[p.columns[p.scorer]].isna().sum()) for p in plans},
            "convention": scan.convention,
            "prompts_without_image": scan.prompts_without_image,
        }
        all_counts[scan.folder] = counts
        folder_meta = {**meta, "counts": counts}
        folder_outputs[scan.folder] = write_folder_results(part.copy(), out_dirs[scan.folder], columns, folder_meta)
        failed_rows = int(part[primary_columns].isna().any(axis=1).sum()) if primary_columns else 0
        summary_rows.append(
            {"folder": Path(scan.folder).name, "images": len(part), "failed": failed_rows,
             "means": column_means(part, columns)}
        )
    summary_paths = write_summary(summary_rows, [c for c in columns if table[c].notna().any()], output_root)
    write_run_record(output_root, [(scan.folder, out_dirs[scan.folder]) for scan in scans])  # what `report` compares
    shown = [c for c in columns if c in table and table[c].notna().any()]
    print("\n" + format_summary_table(summary_rows, shown), file=stream)
    n_failed = int(table[primary_columns].isna().any(axis=1).sum()) if primary_columns else 0
    print(f"\n[janus-ray] results: {', '.join(str(out_dirs[s.folder]) for s in scans)}", file=stream)
    print(f"[janus-ray] summary: {summary_paths[0]}", file=stream)
    print(f"[janus-ray] {len(table)} pair(s), {n_failed} with at least one failed metric", file=stream)
    return RunResult(
        output_root=output_root,
        folder_outputs=folder_outputs,
        summary_paths=summary_paths,
        table=table,
        n_rows=len(table),
        n_failed=n_failed,
        n_cached=n_cached,
        metric_counts=all_counts,
    )

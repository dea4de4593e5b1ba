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
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from janus_ray import __version__
from janus_ray.actors.decode_stage import DecodeStage, stage_error_column, todo_column
from janus_ray.actors.fused_stage import FusedStage
from janus_ray.actors.metric_actor import FAULT_ENV, MetricActor, output_column, time_column
from janus_ray.cache import ResultCache, file_sha256, weights_fingerprint
from janus_ray.config import RunConfig
from janus_ray.errors import ConfigError
from janus_ray.manifest import FolderScan, build_manifest, load_prompts
from janus_ray.metrics import get_scorer_class
from janus_ray.metrics.weights import check_required
from janus_ray.results import column_means, format_summary_table, score_columns, write_folder_results, write_summary

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
        ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False)
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
                dtype=config.dtype,
                batch_size=spec.resolved_batch_size(metric, num_gpus > 0),
                num_gpus=num_gpus,
                num_cpus=1.0 if num_gpus > 0 else round(cpu_share, 2),
                replicas=spec.replicas or 1,
                resources=dict(spec.resources),
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
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Manifest -> rows
# ---------------------------------------------------------------------------------------------
def manifest_frame(scans: list[FolderScan]) -> pd.DataFrame:
    """One row per image-text pair of every folder, with a stable ``row_id`` and its content hash."""
    records = []
    for scan in scans:
        for row in scan.rows:
            records.append(
                {
                    "folder": scan.folder,
                    "prompt_idx": row.prompt_idx,
                    "prompt": row.prompt,
                    "image_path": row.rel_path,
                    "abs_path": row.image_path,
                    "sample": row.sample,
                    "error": row.error or ("missing prompt" if row.prompt is None else None),
                }
            )
    frame = pd.DataFrame.from_records(
        records, columns=["folder", "prompt_idx", "prompt", "image_path", "abs_path", "sample", "error"]
    )
    for column in ("prompt", "error"):  # keep None (not NaN) for absent text
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    frame["prompt_idx"] = frame["prompt_idx"].astype("Int64")
    frame["row_id"] = np.arange(len(frame), dtype=np.int64)
    frame["image_sha256"] = [file_sha256(Path(p)) for p in frame["abs_path"]]
    unreadable = (frame["image_sha256"] == "") & frame["error"].isna()
    frame.loc[unreadable, "error"] = "unreadable image: the file cannot be read"
    return frame


def _dataset_rows(frame: pd.DataFrame, todo: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for i, record in enumerate(frame.itertuples(index=False)):
        if not any(flags[i] for flags in todo.values()):
            continue
        row = {
            "row_id": int(record.row_id),
            "image_path": record.abs_path,
            "prompt": record.prompt if record.prompt is not None else "",
            "has_prompt": record.prompt is not None and record.error is None,
            "decode_error": "",
        }
        row.update({todo_column(m): bool(flags[i]) for m, flags in todo.items()})
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# The Ray part
# ---------------------------------------------------------------------------------------------
def stream_scores(
    rows: list[dict[str, Any]],
    plans: list[MetricPlan],
    config: RunConfig,
    on_batch: Callable[[pd.DataFrame], None],
) -> None:
    """Stream ``rows`` through decoding and every metric's actors; call ``on_batch`` per result batch."""
    import ray

    cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
    n_blocks = max(1, min(len(rows) // config.decode_batch_size, 2000))
    ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
    if use_fused_layout(plans, config):
        ds = _fused_stage(ds, plans, config, cluster_cpus)
    else:
        ds = _separate_stages(ds, plans, config, cluster_cpus)
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


def _decode_kwargs(plans: list[MetricPlan], config: RunConfig) -> dict[str, Any]:
    weights_root = str(Path(config.weights_root).resolve())
    metrics = {p.metric: {"scorer": p.scorer, "weights_root": weights_root, "options": p.options} for p in plans}
    return {"metrics": metrics, "max_pixels": config.max_image_pixels}


def _metric_kwargs(plan: MetricPlan, config: RunConfig, torch_threads: int | None) -> dict[str, Any]:
    return {
        "metric": plan.metric,
        "scorer": plan.scorer,
        "weights_root": str(Path(config.weights_root).resolve()),
        "device": plan.device,
        "dtype": plan.dtype,
        "options": plan.options,
        "torch_threads": torch_threads,
        "fault_injection": os.environ.get(FAULT_ENV),
    }


def _fused_stage(ds, plans: list[MetricPlan], config: RunConfig, cluster_cpus: float):
    """CPU only: each actor decodes and runs every metric (see actors/fused_stage.py)."""
    replicas = fused_replicas(config, cluster_cpus)
    threads = max(1, int(cluster_cpus // replicas))
    return ds.map_batches(
        FusedStage,
        fn_constructor_kwargs={
            "decode": _decode_kwargs(plans, config),
            "metrics": [_metric_kwargs(p, config, None) for p in plans],
            "torch_threads": threads,
        },
        batch_size=max(p.batch_size for p in plans),
        batch_format="numpy",
        concurrency=replicas,
        num_cpus=max(0.1, (cluster_cpus - 1.0) / replicas),  # 1 CPU left for Ray Data's own tasks
        # Ray Data's actor pools default to max_restarts=-1 / max_task_retries=-1: a crashed actor is
        # restarted and its batch retried, so no row is lost or doubled (the kill test checks).
    )


def _separate_stages(ds, plans: list[MetricPlan], config: RunConfig, cluster_cpus: float):
    """A CPU decode pool feeding one actor pool per metric (the GPU layout)."""
    any_gpu = any(p.num_gpus for p in plans)
    max_decoders = max(1, int(cluster_cpus - len(plans))) if any_gpu else 1
    ds = ds.map_batches(
        DecodeStage,
        fn_constructor_kwargs=_decode_kwargs(plans, config),
        batch_size=config.decode_batch_size,
        batch_format="numpy",
        concurrency=(1, max_decoders),
        num_cpus=1.0 if any_gpu else 0.5,
    )
    threads = max(1, int(cluster_cpus // max(1, len(plans))))
    for plan in plans:
        ds = ds.map_batches(
            MetricActor,
            fn_constructor_kwargs=_metric_kwargs(plan, config, threads if plan.num_gpus == 0 else None),
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

    def update(self, batch: pd.DataFrame, todo_rows: dict[str, set[int]]) -> None:
        for plan in self.plans:
            mine = batch[batch["row_id"].isin(todo_rows[plan.metric])]
            self.done[plan.metric] += len(mine)
            self.failed[plan.metric] += int(mine[output_column(plan.scorer)].isna().sum())
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

    frame = manifest_frame(scans)
    cache = ResultCache(Path(config.cache_dir) if config.cache_dir else output_root / ".janus_ray_cache")
    known = cache.load() if config.resume else {}
    todo, n_cached = {}, 0
    scorable = [record.error is None and bool(record.image_sha256) for record in frame.itertuples(index=False)]
    for plan in plans:
        cached = np.array([(sha, prompt, plan.settings_key) in known for sha, prompt in zip(frame["image_sha256"], frame["prompt"])], dtype=bool)
        todo[plan.metric] = np.array(scorable, dtype=bool) & ~cached
        n_cached += int(cached.sum())
    rows = _dataset_rows(frame, todo)
    print(f"[janus-ray] {len(frame)} pair(s), {len(rows)} to score, resume cache hits: {n_cached}", file=stream)

    results: list[pd.DataFrame] = []
    todo_rows = {m: set(frame["row_id"][flags].tolist()) for m, flags in todo.items()}
    progress = Progress(plans, {m: len(s) for m, s in todo_rows.items()}, stream)

    def on_batch(batch: pd.DataFrame) -> None:
        cache.append(_cache_records(batch, frame, plans, todo_rows))
        results.append(batch)
        progress.update(batch, todo_rows)

    if rows:
        stream_scores(rows, plans, config, on_batch)
    table = assemble(frame, plans, known, results)
    meta = run_meta(config, plans, weights_root, cache)
    return write_outputs(config, table, plans, scans, output_root, out_dirs, n_cached, meta, stream)


def _cache_records(batch: pd.DataFrame, frame: pd.DataFrame, plans: list[MetricPlan], todo_rows) -> list[dict]:
    """The successful scores of a result batch, keyed by image content, prompt and settings."""
    row_ids = batch["row_id"].to_numpy()
    shas = frame["image_sha256"].to_numpy()[row_ids]  # row_id is the frame position
    prompts = frame["prompt"].to_numpy()[row_ids]
    records = []
    for plan in plans:
        values = {key: batch[output_column(key)].to_numpy() for key in plan.columns}
        for j, row_id in enumerate(row_ids):
            if row_id not in todo_rows[plan.metric] or math.isnan(values[plan.scorer][j]):
                continue
            scores = json.dumps({k: float(v[j]) for k, v in values.items()})
            records.append({"image_sha256": shas[j], "prompt": prompts[j], "settings": plan.settings_key, "scores": scores})
    return records


def assemble(frame: pd.DataFrame, plans: list[MetricPlan], known: dict, results: list[pd.DataFrame]) -> pd.DataFrame:
    """Merge fresh results and cached scores into one table: one column per output, error text."""
    table = frame.copy()
    fresh = pd.concat(results, ignore_index=True).set_index("row_id") if results else None
    errors: list[list[str]] = [[e] if e else [] for e in table["error"]]
    for plan in plans:
        for key, column in plan.columns.items():
            table[column] = np.nan
        for i, record in enumerate(frame.itertuples(index=False)):
            cached = known.get((record.image_sha256, record.prompt, plan.settings_key))
            if cached is not None:
                for key, column in plan.columns.items():
                    table.at[i, column] = cached.get(key, np.nan)
                continue
            if fresh is None or record.row_id not in fresh.index:
                continue
            row = fresh.loc[record.row_id]
            for key, column in plan.columns.items():
                table.at[i, column] = row[output_column(key)]
            decode_error = row["decode_error"]
            if decode_error and decode_error not in errors[i]:
                errors[i].append(decode_error)
            metric_error = row[stage_error_column(plan.metric)]
            if metric_error:
                errors[i].append(f"{plan.metric}: {metric_error}")
    table["error"] = ["; ".join(e) if e else None for e in errors]
    return table


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

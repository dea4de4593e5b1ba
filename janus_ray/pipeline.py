"""The eval job: manifest -> one Ray Dataset -> decode stage -> one actor pool per metric -> files.

The driver builds the manifest of every folder, plans the placement (janus_ray/plan.py, pure),
skips pairs already in the resume cache, streams the rest through Ray Data (janus_ray/stream.py,
the Ray side; one pass per plan phase), appends each result batch to the cache as it arrives, and
finally writes each folder's files atomically.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from janus_ray import __version__
from janus_ray.cache import ResultCache, WeightHashes, image_memo, weights_fingerprint
from janus_ray.columns import check_result_batch, load_failure, oom_column, output_column, time_column
from janus_ray.config import RunConfig
from janus_ray.errors import (
    ConfigError,
    InputError,
    Interrupted,
    InterruptedAfterWrite,
    JanusRayError,
    ResultsNotWritten,
    actors_load_error,
)
from janus_ray.manifest import build_manifest, load_prompts
from janus_ray.metrics import get_scorer_class
from janus_ray.metrics.weights import LAYOUT_HELP, check_required
from janus_ray.outputs import RunResult, WriteRequest, warn_replaced_results, write_outputs  # noqa: F401  (RunResult: re-exported)
from janus_ray.plan import Phase, Plan, plan_run
from janus_ray.results import ROOT_OUTPUTS, ensure_writable_directory, unwritable_reason
from janus_ray.signals import sigint_deferred
from janus_ray.table import (
    BatchRecorder,
    cached_failures,
    HashJob,
    assemble,
    dataset_rows,
    manifest_frame,
    select_todo,
)

log = logging.getLogger("janus_ray")


@dataclass
class MetricPlan:
    """How one metric runs: which scorer, where, how big its batches and pool are."""

    metric: str  # also the scorer's registry name (hpsv2.1 is its own scorer, not an option)
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
            f"device {self.device}, dtype {self.compute_dtype}"
        )

    @property
    def compute_dtype(self) -> str:
        return self.dtype or ("float32" if self.device == "cpu" else "reference default")


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
def metric_plans(phase: Phase, config: RunConfig) -> list[MetricPlan]:
    """The MetricPlans of one plan phase, in the run's metric order."""
    plans = []
    for metric in [m for m in config.metrics if m in phase.pools]:
        pool = phase.pools[metric]
        options = dict(config.spec(metric).options)
        plans.append(
            MetricPlan(
                metric=metric,
                options=options,
                columns=get_scorer_class(metric).output_columns(**options),
                device="cuda" if pool.num_gpus > 0 else "cpu",
                dtype=config.spec(metric).dtype or config.dtype,
                batch_size=pool.batch_size,
                num_gpus=pool.num_gpus,
                num_cpus=pool.num_cpus,
                replicas=pool.replicas,
                resources=dict(pool.resources),
                tf32=config.tf32 and pool.num_gpus > 0,
            )
        )
    return plans


def plan_metrics(config: RunConfig, cluster_gpus: int, cluster_cpus: float, gpu_memory_gb: float = 80.0) -> list[MetricPlan]:
    """Every phase's MetricPlans for one node of ``cluster_gpus`` GPUs (pure: no Ray; for tests)."""
    from janus_ray.plan import ClusterShape

    config.resolve_names()
    shape = ClusterShape.uniform(cluster_gpus, gpu_memory_gb if cluster_gpus else 0.0, cluster_cpus)
    plan = plan_run(config, shape, use_weight_files=False, measured=False)
    return [p for phase in plan.phases for p in metric_plans(phase, config)]


def ray_is_up() -> bool:
    """Whether this process already has Ray initialised (never imports ``ray`` to find out)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def shutdown_embedded_ray() -> None:
    """Shut down the embedded Ray this process started, on the calling thread, once the run's
    result files are written: a later run in this process starts a fresh one. See
    ``stream.disconnect`` for the wait on Ray Data's threads: without it, a thread still using
    Ray after the shutdown ended a finished run with Ray's fatal "The core worker has already been
    shutdown" and exit code 1 (new users' trials: ~1 run in 30 fused, 1 in 3 per-metric)."""
    from janus_ray.stream import disconnect

    disconnect()


def runs_locally(config: RunConfig) -> bool:
    """An embedded Ray on this machine: no --ray-address, no RAY_ADDRESS (a Ray job), Ray not up."""
    from janus_ray.stream import join_address

    return not ray_is_up() and not join_address(config.ray_address)


def plan_before_ray(config: RunConfig, stream=sys.stderr, local: bool | None = None) -> tuple[Plan, bool]:
    """(plan, autoscaling), starting nothing when this machine runs alone: the plan is made (and a
    plan that cannot fit refused) from ``local_shape``, and Ray is started later by ``ensure_ray``
    only if the resume cache leaves something to score. A joined cluster is connected to here, to
    learn its shape. ``local``: ``runs_locally(config)`` decided by the caller (``evaluate`` starting
    the embedded Ray while this runs in a thread would otherwise make it look like a joined one)."""
    from janus_ray.stream import cluster_shape, connect, local_shape

    if runs_locally(config) if local is None else local:
        return plan_run(config, local_shape(config.gpu_memory_gb)), False
    connection = connect(config.ray_address)
    shape = cluster_shape(connection, config.gpu_memory_gb)
    return plan_run(config, shape), shape.can_autoscale


def ensure_ray(config: RunConfig) -> bool:
    """Start the embedded Ray (or join ``config``'s cluster) unless this process already has Ray.
    Returns True when this call started an embedded local Ray (its caller may shut it down)."""
    if ray_is_up():
        return False
    from janus_ray.stream import connect

    return not connect(config.ray_address).joined


def connect_and_plan(config: RunConfig, stream=sys.stderr) -> tuple[Plan, bool]:
    """Plan, then have Ray ready: (plan, autoscaling). ``plan_before_ray`` + ``ensure_ray``."""
    plan, autoscale = plan_before_ray(config, stream)
    ensure_ray(config)
    return plan, autoscale


def settings_key(plan: MetricPlan, weights_root: Path) -> str:
    """Identity of 'the same metric and settings' for resume: scorer, options, device, dtype, weights."""
    cls = get_scorer_class(plan.metric)
    files = cls.required_files(weights_root, **plan.options)
    payload = {
        "scorer": plan.metric,
        "options": plan.options,
        "device": plan.device,
        "dtype": plan.dtype,
        "weights": weights_fingerprint(files, weights_root),
        "janus_ray": __version__,
    }
    if plan.tf32:  # only when on: the keys of default runs stay what they were
        payload["tf32"] = True
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
        self.oom = dict.fromkeys(totals, 0)
        self.started = time.perf_counter()
        self.last_print = 0.0

    def update(self, batch: pd.DataFrame, todo: dict[str, np.ndarray]) -> None:
        """``todo[metric]``: bool per frame row (``row_id`` indexes it)."""
        row_ids = batch["row_id"].to_numpy(dtype=np.int64)
        for plan in self.plans:
            mine = todo[plan.metric][row_ids]
            self.done[plan.metric] += int(mine.sum())
            # to_numpy(float, na_value=nan): Ray hands pyarrow-backed doubles, where a NaN is not "NA"
            scores = batch[output_column(plan.metric)].to_numpy(dtype=float, na_value=np.nan)
            self.failed[plan.metric] += int(np.isnan(scores[mine]).sum())
            self.busy[plan.metric] += float(batch[time_column(plan.metric)].sum())
            if oom_column(plan.metric) in batch:  # per row: the batch's halvings; count each batch once
                self.oom[plan.metric] += int(batch[oom_column(plan.metric)].max() or 0)
        now = time.perf_counter()
        if now - self.last_print > 5 or all(self.done[m] >= self.totals[m] for m in self.totals):
            self.last_print = now
            self.print()

    def print(self) -> None:
        elapsed = max(1e-9, time.perf_counter() - self.started)
        for plan in self.plans:
            m = plan.metric
            if not self.totals[m]:  # all cached (a rerun that adds a metric): no "0/0 0.00 img/s" line
                continue
            actor_rate = self.done[m] / self.busy[m] if self.busy[m] else 0.0
            print(
                f"[janus-ray] {m:<12} {self.done[m]:>6}/{self.totals[m]:<6} {self.done[m] / elapsed:8.2f} img/s"
                f" (actors busy: {actor_rate:.2f} img/s per replica)  failed {self.failed[m]} of those scored"
                + (f"  out-of-memory: batch halved {self.oom[m]}x" if self.oom[m] else ""),
                file=self.stream,
                flush=True,
            )


def output_dirs(config: RunConfig) -> tuple[Path, dict[str, Path]]:
    """(output root, per-folder output dir). Default: each folder itself, root = their common parent."""
    folders = [Path(f).resolve() for f in config.folders]
    if config.output_dir:
        root = Path(config.output_dir).resolve()
        names = [f.name for f in folders]
        for i, folder in enumerate(folders):  # the same folder twice ('a' and 'a/'): say that, not "share a name"
            if folder in folders[:i]:
                raise ConfigError(f"Input folder {config.folders[i]} is given twice (same as "
                                  f"{config.folders[folders.index(folder)]}).")
        if len(set(names)) != len(names):
            raise ConfigError(f"Input folders share a name ({names}); cannot map them into one --output-dir.")
        dirs = {str(f): root / f.name for f in folders}
    else:
        root = Path(os.path.commonpath(folders)) if len(folders) > 1 else folders[0].parent
        dirs = {str(f): f for f in folders}
    # a result folder where the run writes its own files (summary.csv, the resume cache): eval would
    # score everything and then fail writing the summary, or write results into the cache
    reserved = {root / name for name in ROOT_OUTPUTS} | ({cache_directory(config, root)} if not config.cache_dir else set())
    for folder, out in dirs.items():
        if out in reserved:
            raise ConfigError(f"Folder {folder}'s results would go to {out}, where the run writes its own "
                              f"{out.name}: rename the folder, or give {'another ' if config.output_dir else ''}--output-dir.")
    return root, dirs


@dataclass
class Stages:
    """The seam for tests and benchmarks: what ``evaluate`` calls for the Ray side and the progress.

    ``stream_scores``: a callable with ``janus_ray.stream.stream_scores``' signature
    ``(rows, plans, config, on_batch, *, decode_replicas, decode_cpus, autoscale, journal_dir)`` that
    calls ``on_batch(batch)`` once per result batch (a pandas frame with ``row_id`` and the columns of
    janus_ray/columns.py); None = the Ray stream. ``progress``: the class counting result batches
    (``Progress``'s constructor and ``update``/``oom``). ``actors``: a ``janus_ray.stream.ActorClasses``
    (the decode, metric and fused UDF classes), handed to the stream as ``actors=``; None = the real
    classes (and no ``actors`` argument, so a stand-in ``stream_scores`` need not take one). Swap these
    instead of patching module globals.
    """

    stream_scores: Callable[..., None] | None = None
    progress: type[Progress] = Progress
    #: ``(config, stream) -> (Plan, autoscaling)``; None = ``plan_before_ray`` (joins a given cluster
    #: to learn its shape; on this machine alone starts nothing). Ray itself is started (``ensure_ray``)
    #: only when something is left to score and ``stream_scores`` is the Ray stream (None): while the
    #: folders are scanned when no resume-cache part exists (``starts_ray_early``, which also needs
    #: ``plan`` None), else once the cache has been read. A
    #: stand-in with ``stream_scores`` = ``janus_ray.stream.stream_in_process`` runs ``evaluate`` with
    #: no Ray at all (fast tests).
    plan: Callable[[RunConfig, Any], tuple[Plan, bool]] | None = None
    actors: Any = None  # janus_ray.stream.ActorClasses (not imported here: that module loads the actors)

    def stream(self) -> Callable[..., None]:
        stream_scores = self.stream_scores
        if stream_scores is None:
            from janus_ray.stream import stream_scores
        return stream_scores if self.actors is None else functools.partial(stream_scores, actors=self.actors)


@dataclass
class StreamOutcome:
    """What ``stream_phases`` returns: ``results`` (the result frames, one per row across phases),
    ``oom_halvings`` (batch halvings per metric), ``pixel_stores`` (the stream's pixel-store
    summaries, one per phase whose pixels went through stores), ``owns_ray``."""

    results: list[pd.DataFrame]
    oom_halvings: dict[str, int]
    pixel_stores: list[dict[str, Any]]
    owns_ray: bool = False  # an embedded Ray this run started (the caller's, or one the stream started)


@dataclass
class Work:
    """What is left to score after the resume cache: per metric a bool per frame row (``todo``), the
    cached scores (``cached``, table.select_todo's), and how many (row, metric) pairs were hits."""

    cache: ResultCache
    todo: dict[str, np.ndarray]
    cached: dict[str, dict[str, np.ndarray]]
    n_cached: int


def evaluate(config: RunConfig, stream=sys.stderr, *, stages: Stages | None = None,
             preload: Callable[[], Any] | None = None,
             then: Callable[[RunResult], Any] | None = None) -> RunResult:
    """Run the whole eval job described by ``config`` and write every result file.

    The steps, one function each: check (config, weight files) -> scan (manifest) -> plan (no Ray on
    this machine alone; one MetricPlan list per phase, with its resume settings key) -> select work
    (resume cache) -> stream each phase (Ray started only now, and only if something is left) ->
    assemble -> write. When Ray is sure to be needed (``starts_ray_early``: this machine alone, no
    resume-cache part to read) the embedded Ray starts at once, on this thread, while another one
    scans, hashes and plans; an embedded Ray started here is shut down once the
    stream is done (``shutdown_embedded_ray``). ``config`` is validated in place (names resolved)
    but its folders are not rewritten: the run works on a copy with absolute folders. ``stages``:
    see ``Stages``. ``preload``: called once in a thread (``in_thread``) as soon as the inputs are scanned
    and planned, so that it overlaps Ray's start and the stream; its errors are ignored. The CLI
    imports the report's libraries there (~2 CPU seconds), which the report after the scores would
    otherwise wait for. ``then``: called with the written result in a thread while this thread
    shuts the embedded Ray down (which mostly waits for Ray's processes to exit); ``result.then``
    is a Future of what it returns or raises (a Ctrl-C during the shutdown raises
    InterruptedAfterWrite, which carries it). The CLI builds the report there.
    """
    stages = stages or Stages()
    check_inputs(config)  # a bad flag or a missing weight file fails before any Ray starts
    if starts_ray_early(config, stages):
        run, owns_ray = prepare_while_ray_starts(config, stream, stages, preload=preload)
    else:
        run, owns_ray = prepare_run(config, stream, stages, checked=True, preload=preload), False
    config, plans, work = run.config, run.plans, run.work
    # before the scoring, not after it: a user who reused an --output-dir can still stop
    warn_replaced_results(run.output_root, [(scan.folder, run.out_dirs[scan.folder]) for scan in run.scans], stream)
    try:
        streamed = stream_phases(run.frame, run.phase_plans, work, config, run.plan, run.autoscale,
                                 stream, stages, owns_ray=owns_ray)
        table = assemble(run.frame, plans, work.cached, streamed.results)
        meta = run_meta(config, plans, Path(config.weights_root).resolve(), run.weight_hashes.result())
    finally:
        run.weight_hashes.cancel()  # a failed run stops hashing at once (finished files stay memoised)
    meta["plan"] = run.plan.to_json()
    meta["oom_batch_halvings"] = streamed.oom_halvings
    try:
        result = write_outputs(WriteRequest(table=table, plans=plans, scans=run.scans, output_root=run.output_root,
                                            out_dirs=run.out_dirs, n_cached=work.n_cached, meta=meta, stream=stream))
    except OSError as exc:  # one line, not a traceback: every score is kept in the resume cache
        if streamed.owns_ray:
            shutdown_embedded_ray()
        target = exc.filename2 or exc.filename or "a result file"  # os.replace(temporary, target)
        again = "the same command" if config.resume else "the same command without --no-resume"
        raise ResultsNotWritten(
            f"Cannot write {target}: {exc.strerror or exc}. The scores are kept in the resume cache "
            f"({cache_directory(config, run.output_root)}): once that file can be written, {again} writes "
            "every result file without scoring again.") from None
    result.pixel_stores = streamed.pixel_stores
    result.then = in_thread(then, result, name="janus-ray-then") if then is not None else None
    if streamed.owns_ray:  # after the files: whatever Ray's shutdown does, the results are on disk
        with sigint_deferred("Ray has shut down",
                             raise_as=lambda: InterruptedAfterWrite(str(result.output_root), result.then)):
            shutdown_embedded_ray()
    return result


def in_thread(function: Callable[..., Any], *args: Any, name: str = "janus-ray-then") -> Future:
    """``function(*args)`` in a thread called ``name``; the Future holds its return value or
    exception (unread: dropped). Not a daemon: the interpreter waits for it at exit, as it must: a
    daemon thread stopped at exit inside a C++ extension (matplotlib's font code, for the report)
    aborted the process ("TerminateHandler", exit 134) in a new user's trial."""
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=False).start()
    return future


@dataclass
class PreparedRun:
    """What ``prepare_run`` hands the stream: the run's config (absolute folders), scans, output
    places, the running weight-file hashing, the plan (and its MetricPlans), the manifest frame and
    the work left after the resume cache."""

    config: RunConfig
    scans: list
    output_root: Path
    out_dirs: dict[str, Path]
    weight_hashes: WeightHashes
    plan: Plan
    autoscale: bool
    phase_plans: list[list[MetricPlan]]
    plans: list[MetricPlan]
    frame: pd.DataFrame
    work: Work


def prepare_run(config: RunConfig, stream=sys.stderr, stages: Stages | None = None, *, local: bool | None = None,
                checked: bool = False, preload: Callable[[], Any] | None = None) -> PreparedRun:
    """Everything before the stream: scan, start the weight-file and image hashing (thread pools,
    overlapping what follows), plan (``local``: see ``plan_before_ray``), manifest frame, resume
    selection. ``checked``: ``check_inputs`` already ran. On failure the weight hashing is stopped.
    ``preload`` (see ``evaluate``) starts in a thread once all of that is done (while an early Ray
    may still be starting); its error, if any, is met again where it is used."""
    config, scans = scan_inputs(config, stream, checked=checked)
    output_root, out_dirs = output_dirs(config)
    weights_root = Path(config.weights_root).resolve()
    # weight-file hashes (provenance) and image content hashes (resume keys) in thread pools,
    # overlapping the planning, the cache load, the Ray start and the stream
    weight_hashes = WeightHashes(cache_directory(config, output_root), weight_files(config, weights_root))
    try:
        rows = [row for scan in scans for row in scan.rows]
        # Content hashes key the resume cache. With nothing to reuse the driver need not read the
        # images: the decode stage hashes the bytes it reads anyway (columns.IMAGE_SHA256); the
        # files are only stat'ed (their records remember it). Otherwise the cache is read first:
        # its records say which files (path, size, mtime, inode) were hashed already. A row that
        # cannot be scored (no prompt, a scan error) needs no hash.
        deferred = hashes_deferred(config, output_root)
        known = None if deferred else ResultCache(cache_directory(config, output_root)).load()
        hashes = HashJob([row.image_path for row in rows], memo=image_memo(known),
                         read=[not deferred and row.error is None and row.prompt is not None for row in rows])
        plan, autoscale, phase_plans, plans = plan_phases(config, stream, stages, local=local)
        frame = manifest_frame(scans, hashes)
        if not deferred:
            print(f"[janus-ray] image hashes: {hashes.reads} image(s) read on the driver, {hashes.memo_hits} "
                  "unchanged since the resume cache recorded them (path, size, mtime, inode)", file=stream)
        work = select_work(config, frame, plans, output_root, stream, known=known)
    except BaseException:
        weight_hashes.cancel()
        raise
    if preload is not None:
        in_thread(preload, name="janus-ray-preload")
    return PreparedRun(config=config, scans=scans, output_root=output_root, out_dirs=out_dirs,
                       weight_hashes=weight_hashes, plan=plan, autoscale=autoscale, phase_plans=phase_plans,
                       plans=plans, frame=frame, work=work)


def hashes_deferred(config: RunConfig, output_root: Path) -> bool:
    """Whether nothing can come from the resume cache (resume off, or a cache directory without
    parts): then the images' content hashes are not computed on the driver but by the decode stage,
    from the bytes it reads and decodes (each image is read once, on a worker, not also here)."""
    return not config.resume or not ResultCache(cache_directory(config, output_root)).parts()


def starts_ray_early(config: RunConfig, stages: Stages) -> bool:
    """Whether Ray is sure to be needed before the folders are even scanned, so that ``evaluate``
    starts it while they are: the default (Ray) stream and planning, an embedded Ray on this
    machine (``runs_locally``: never for --ray-address, RAY_ADDRESS / a Ray job, or a Ray already
    up), and no resume-cache part to read (resume off, or a cache directory without parts). A
    rerun with a cache keeps the order scan -> cache -> Ray only if something is left to score.
    ``config`` must be validated (``check_inputs``)."""
    if stages.stream_scores is not None or stages.plan is not None or not runs_locally(config):
        return False
    return hashes_deferred(config, output_dirs(config)[0])


def prepare_while_ray_starts(config: RunConfig, stream=sys.stderr, stages: Stages | None = None, *,
                             preload: Callable[[], Any] | None = None) -> tuple[PreparedRun, bool]:
    """``prepare_run`` in a thread while this thread starts the embedded Ray (``ray.init`` belongs on
    the main thread: it installs a SIGTERM handler there). Ray's start is mostly waiting for its
    processes, the scan is one busy thread: on 2 CPUs they overlap. Returns (the prepared run,
    whether this call started the embedded Ray). An error of the scan (bad input) is raised as is,
    once Ray is up, and that Ray is shut down; if Ray fails to start, the scan is
    waited for and its hashing stopped. ``preload``: see ``prepare_run``."""

    def prepare() -> PreparedRun:
        run = prepare_run(config, stream, stages, local=True, checked=True, preload=preload)
        import_ray_data()
        return run

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="janus-ray-scan") as pool:
        future = pool.submit(prepare)
        try:
            started = ensure_ray(config)
        except BaseException:
            if future.exception() is None:  # waits for the scan
                future.result().weight_hashes.cancel()
            raise
        try:
            return future.result(), started
        except BaseException:
            if started:  # the scan failed (bad input): the Ray started for it is not needed
                shutdown_embedded_ray()
            raise


def import_ray_data() -> None:
    """Import Ray Data (~0.4 s of one CPU). ``prepare_while_ray_starts`` does it in the scan's
    thread while ``ray.init`` waits for Ray's processes: on the main thread after ``ray.init``
    (``stream.connect``, creating Ray Data's helper actors) it delayed the helpers and the stream
    by that much (measured: ``ray.init`` returning -> stream start 0.46 s before, 0.19 s after)."""
    import ray.data  # noqa: F401


def run_problems(config: RunConfig) -> list[str]:
    """What ``check_inputs`` would refuse in ``config`` besides the folders' own problems, all of
    it, for ``janus-ray validate`` (which reports instead of raising, and creates nothing): the
    folders' output mapping (--output-dir), every metric's dtype and options and, with a weights
    root, its weight files. Each problem is one message (a weight problem lists its files on further lines)."""
    problems = []
    try:
        output_dirs(config)
    except ConfigError as exc:
        if "is given twice" not in str(exc):  # the folder report says so already
            problems.append(str(exc))
    weights_root = Path(config.weights_root).resolve() if config.weights_root else None
    for metric in config.metrics:
        try:
            check_metric(config, metric, weights_root)
        except JanusRayError as exc:
            problems.append(str(exc).split(LAYOUT_HELP)[0].rstrip())  # the layout: once, by the caller
    return problems


def check_metric(config: RunConfig, metric: str, weights_root: Path | None = None) -> None:
    """What eval checks of one metric before Ray starts: its dtype, its options and, given a
    weights root, its weight files. Raises ConfigError / WeightsError."""
    cls = get_scorer_class(metric)
    cls.check_dtype(config.spec(metric).dtype or config.dtype)
    cls.check_options(config.spec(metric).options)
    if weights_root is not None:
        check_required(cls.required_files(weights_root, **config.spec(metric).options), metric)


def check_inputs(config: RunConfig) -> None:
    """Validate ``config`` (in place: names resolved) and check every run metric's weight files.

    Then create the output root (``--output-dir``) and the resume cache's directory: one that
    cannot be created or written fails here, in one line, not in the actors' tracebacks.

    Raises ConfigError / WeightsError (missing weight file)."""
    config.validate()
    weights_root = Path(config.weights_root).resolve()
    for metric in config.metrics:  # fail fast, before Ray starts, on a missing weight file or a refused dtype
        check_metric(config, metric, weights_root)
    output_root, out_dirs = output_dirs(config)
    # every result folder that exists already (the input folders themselves without --output-dir) and
    # the output root (the summary): a file is created there now, not after the scoring, and before
    # the resume cache's directory is made under it (a refused run leaves nothing behind)
    hint = "another --output-dir" if config.output_dir else "--output-dir DIR"
    for directory in dict.fromkeys([output_root, *out_dirs.values()]):
        reason = unwritable_reason(directory)
        if reason:
            raise ConfigError(f"Cannot write the results into {directory}: {reason}. Give {hint} to write them "
                              "(per folder, and the summary) elsewhere.")
    for what, directory in (("--output-dir", output_root if config.output_dir else None),
                            ("--cache-dir" if config.cache_dir else "the resume cache", cache_directory(config, output_root))):
        if directory is not None:
            ensure_writable_directory(directory, what)


def scan_inputs(config: RunConfig, stream=sys.stderr, *, checked: bool = False) -> tuple[RunConfig, list]:
    """Check ``config`` (``check_inputs``, unless ``checked``: done already) and scan the folders.

    Returns (a copy of ``config`` with absolute folders, the FolderScans). Raises ConfigError /
    WeightsError (missing weight file) / the manifest's errors.
    """
    if not checked:
        check_inputs(config)
    prompts = load_prompts(config.prompt_json) if config.prompt_json else None
    config = replace(config, folders=[str(Path(f).resolve()) for f in config.folders])
    scans = build_manifest(config.folders, prompts, all_samples=config.all_samples, limit=config.limit)
    for scan in scans:
        print(f"[janus-ray] {scan.folder}: {scan.convention}, {len(scan.rows)} image(s)", file=stream)
        for warning in scan.warnings:
            print(f"[janus-ray]   warning: {warning}", file=stream)
    if not any(scan.rows for scan in scans):  # before any Ray work: an empty run would write empty files
        raise InputError(f"No images found in any input folder ({', '.join(config.folders)}): nothing to score. "
                         "`janus-ray validate FOLDER...` shows what janus-ray finds in each folder.")
    return config, scans


def plan_phases(config: RunConfig, stream=sys.stderr, stages: Stages | None = None, *,
                local: bool | None = None) -> tuple[Plan, bool, list[list[MetricPlan]], list[MetricPlan]]:
    """Plan (``stages.plan``, default ``plan_before_ray``: no Ray on this machine alone; ``local``
    passed to it): (plan, autoscaling, MetricPlans per phase, all MetricPlans in the run's metric
    order, each with its resume ``settings_key``)."""
    stages = stages or Stages()
    plan, autoscale = (stages.plan or functools.partial(plan_before_ray, local=local))(config, stream)
    print("[janus-ray] " + plan.table().replace("\n", "\n[janus-ray]   "), file=stream)
    phase_plans = [metric_plans(phase, config) for phase in plan.phases]
    order = {m: i for i, m in enumerate(config.metrics)}
    plans = sorted((p for phase in phase_plans for p in phase), key=lambda p: order[p.metric])
    weights_root = Path(config.weights_root).resolve()
    for metric_plan in plans:
        metric_plan.settings_key = settings_key(metric_plan, weights_root)
    # the table above has replicas, shares and batches; only the device and dtype are not in it
    print("[janus-ray] device, dtype: " + ", ".join(f"{p.metric} {p.device} {p.compute_dtype}" for p in plans),
          file=stream)
    from janus_ray.stream import fused_replicas, use_fused_layout

    if stages.stream_scores is None and use_fused_layout(plans, config):
        # the plan's CPUs are the cluster's (an embedded Ray gets this machine's): no Ray needed
        replicas = fused_replicas(config, plan.cpus_total)
        print(f"[janus-ray] no GPUs: decode + all metrics fused in {replicas} CPU actor(s) "
              "(cpu_layout='per-metric' for one pool per metric)", file=stream)
    return plan, autoscale, phase_plans, plans


#: the resume cache's directory under the output root when no --cache-dir is given
CACHE_DIR_NAME = ".janus_ray_cache"


def cache_directory(config: RunConfig, output_root: Path) -> Path:
    """The resume cache's directory: ``config.cache_dir`` or ``<output root>/.janus_ray_cache``
    (``CACHE_DIR_NAME``)."""
    # absolute: the crash journal under it is written by actors, whose working directory may differ
    return (Path(config.cache_dir) if config.cache_dir else output_root / CACHE_DIR_NAME).resolve()


def metric_weight_files(metric: str, weights_root: Path, options: dict[str, Any]) -> list[Path]:
    """The weight files of one metric that exist, as ``RequiredFile.resolve`` finds them."""
    found = (item.resolve() for item in get_scorer_class(metric).required_files(weights_root, **options))
    return [f for f in found if f is not None and f.is_file()]


def weight_files(config: RunConfig, weights_root: Path) -> list[Path]:
    """Every weight file of the run's metrics (the paths ``run_meta`` reports hashes of), once each."""
    return list(dict.fromkeys(
        f for metric in config.metrics for f in metric_weight_files(metric, weights_root, config.spec(metric).options)
    ))


def select_work(config: RunConfig, frame: pd.DataFrame, plans: list[MetricPlan], output_root: Path,
                stream=sys.stderr, known: pd.DataFrame | None = None) -> Work:
    """Open the resume cache (``cache_directory``) and pick, per metric, the rows it does not
    already hold (all rows when ``config.resume`` is off). ``known``: the cache's records, when
    already loaded (else they are loaded here)."""
    cache = ResultCache(cache_directory(config, output_root))
    if not config.resume:
        known = None
    elif known is None:
        known = cache.load()
    todo, cached, n_cached = select_todo(frame, plans, known)
    del known
    n_todo = int(np.logical_or.reduce(list(todo.values())).sum()) if todo else 0
    failures = cached_failures(cached)
    failed_note = f", plus {failures} known failure(s) of unreadable image bytes (not retried)" if failures else ""
    print(f"[janus-ray] {len(frame)} pair(s), {n_todo} to score, resume cache hits: {n_cached}{failed_note} "
          f"(hits count (pair, metric) scores; 'to score' counts pairs with a metric left)", file=stream)
    return Work(cache=cache, todo=todo, cached=cached, n_cached=n_cached)


def stream_phases(frame: pd.DataFrame, phase_plans: list[list[MetricPlan]], work: Work, config: RunConfig,
                  plan: Plan, autoscale: bool, stream=sys.stderr,
                  stages: Stages | None = None, *, owns_ray: bool = False) -> StreamOutcome:
    """Stream each phase's rows through ``stages.stream_scores``, one phase after another, appending
    every result batch to the resume cache as it arrives (flushed even when a phase fails).

    ``owns_ray``: the caller started the embedded Ray; the outcome's ``owns_ray`` is also True when
    this call started it (``evaluate`` shuts it down once the result files are written).

    Returns a ``StreamOutcome``.
    """
    stages = stages or Stages()
    stream_scores = stages.stream()
    cache, todo = work.cache, work.todo
    oom_halvings = dict.fromkeys(config.metrics, 0)
    results_by_phase: list[list[pd.DataFrame]] = []
    received = [0]  # result rows appended to the resume cache, for the Ctrl-C message
    pixel_stores: list[dict[str, Any]] = []  # the stream's pixel-store summaries, one per phase that used stores
    try:
        for number, current in enumerate(phase_plans, 1):
            phase_todo = {p.metric: todo[p.metric] for p in current}
            rows = dataset_rows(frame, phase_todo)
            results: list[pd.DataFrame] = []
            recorder = BatchRecorder(frame, current, phase_todo)
            progress = stages.progress(current, {m: int(flags.sum()) for m, flags in phase_todo.items()}, stream)
            if len(phase_plans) > 1:
                print(f"[janus-ray] phase {number}/{len(phase_plans)}: {', '.join(p.metric for p in current)}", file=stream)

            def on_batch(batch: pd.DataFrame, recorder=recorder, results=results, progress=progress,
                         phase_todo=phase_todo, current=current) -> None:
                check_result_batch(batch, current)
                failure = load_failure(batch, current)
                if failure is not None:  # an actor's model did not load: end the run, nothing cached
                    raise failure
                cache.append(recorder.record(batch))
                received[0] += len(batch)
                results.append(batch)
                progress.update(batch, phase_todo)

            if len(rows):
                if stages.stream_scores is None:
                    # the first phase with work starts Ray (a cached rerun never does)
                    owns_ray = ensure_ray(config) or owns_ray
                # The crash journal lives beside the resume cache, one directory per phase (actors/journal.py).
                inflight = cache.directory / "inflight"
                sweep_dead_journals(inflight)
                journal = inflight / f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}-{os.getpid()}-{number}"
                # only the Ray stream is told whether its Ray is the embedded one (stand-ins need not know)
                extra = {"embedded": owns_ray} if stages.stream_scores is None else {}
                try:
                    summary = stream_scores(rows, current, config, on_batch, decode_replicas=plan.decode.max_replicas,
                                            decode_cpus=plan.decode.num_cpus or 1.0, autoscale=autoscale,
                                            journal_dir=str(journal), **extra)
                    if summary:
                        pixel_stores.append(summary)
                except Exception as exc:  # noqa: BLE001 - re-raised unless it is an actor's own error
                    raise actor_start_failure(exc) or exc
                finally:
                    shutil.rmtree(journal, ignore_errors=True)
                    with contextlib.suppress(OSError):  # only when empty: another run may be journaling there
                        journal.parent.rmdir()
            for metric, count in progress.oom.items():
                oom_halvings[metric] += count
            results_by_phase.append(results)
    except KeyboardInterrupt as exc:
        raise Interrupted(received[0], str(cache.directory)) from exc
    finally:
        cache.flush()  # what was scored stays cached even when the run fails
    return StreamOutcome(_merge_phases(results_by_phase), oom_halvings, pixel_stores, owns_ray)


#: the line a janus-ray error leaves in the traceback text Ray keeps of a failed actor constructor
ACTOR_ERROR_LINE = re.compile(r"^janus_ray\.errors\.(\w+): (.+)$", re.MULTILINE)


def actor_start_failure(exc: BaseException) -> JanusRayError | None:
    """The janus-ray error (a ``WeightsError``: a checkpoint that does not match its model) that
    made a stage's actor constructor fail, rebuilt from ``exc``, the stream's error; None if it is
    not one. Why: Ray's ActorDiedError keeps that cause only as traceback text, so the run would end
    in Ray's traceback instead of janus-ray's own one-line error (a new user's trial: ~280 lines).
    Only the error's first line is kept; it names the file and what it does not match."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 8:
        seen.append(exc)
        match = ACTOR_ERROR_LINE.search(str(exc))
        if match:
            return actors_load_error(match.group(1), match.group(2))
        exc = exc.__cause__ or exc.__context__
    return None


def sweep_dead_journals(inflight: Path) -> list[Path]:
    """Remove the crash journals (``<time>-<host>-<pid>-<phase>``) of earlier runs on this host whose
    driver process is gone: after a Ctrl-C an actor still finishing its batch can write its entry
    after the driver removed the run's journal. Another host's runs and live drivers are kept (the
    cache directory may be shared). Returns the removed directories."""
    host, removed = socket.gethostname(), []
    if not inflight.is_dir():
        return removed
    for entry in inflight.iterdir():
        head, _, tail = entry.name.rpartition("-")  # tail: the phase number
        head, _, pid = head.rpartition("-")
        # head: '%Y%m%d-%H%M%S' (15 characters), '-', the host name (which may hold '-' itself)
        if not (entry.is_dir() and tail.isdigit() and pid.isdigit() and head[15:16] == "-" and head[16:] == host):
            continue
        if int(pid) == os.getpid() or _process_alive(int(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _merge_phases(results_by_phase: list[list[pd.DataFrame]]) -> list[pd.DataFrame]:
    """One result frame per row across phases (each phase scored some metrics of the same rows)."""
    frames = [pd.concat(results, ignore_index=True).set_index("row_id") for results in results_by_phase if results]
    if len(frames) <= 1:
        return [frame.reset_index() for frame in frames]
    merged = frames[0]
    for frame in frames[1:]:
        merged = merged.combine_first(frame)
    return [merged.reset_index()]


def run_meta(config: RunConfig, plans: list[MetricPlan], weights_root: Path,
             weights_sha256: Mapping[str, str]) -> dict[str, Any]:
    """Provenance written into every JSON result file (per-folder counts are added by the caller).

    ``weights_sha256``: {resolved weight path: sha256} (``WeightHashes.result()``). Imports neither
    Ray, torch nor transformers (a cached rerun loads no model): their versions come from the package
    metadata.
    """
    metrics = {}
    for plan in plans:
        cls = get_scorer_class(plan.metric)
        files = metric_weight_files(plan.metric, weights_root, plan.options)
        digests = {str(f): weights_sha256[str(f)] for f in files if str(f) in weights_sha256}
        metrics[plan.metric] = {
            **cls.metadata(),
            "options": plan.options,
            "columns": plan.columns,
            "device": plan.device,
            "dtype": plan.dtype or ("float32" if plan.device == "cpu" else cls.cuda_dtype),
            "weights_sha256": digests,
        }
    return {
        "janus_ray_version": __version__,
        "metrics": metrics,
        "versions": {"ray": _version("ray"), "torch": _version("torch"), "transformers": _version("transformers")},
        "config": {k: v for k, v in asdict(config).items() if k != "metric_specs"},
    }


def _version(dist: str) -> str | None:
    """An installed distribution's version without importing it (``ray``: no Ray start-up cost)."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return None

"""The Ray side of an eval: joining or starting Ray, the cluster's shape, streaming rows through pools.

With ``janus_ray/actors`` the only code that imports ``ray``. Everything about *whether* the run
joined a cluster and whether that cluster can add nodes is decided here, once, in ``connect``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from janus_ray.actors.decode_stage import DecodeStage
from janus_ray.actors.fused_stage import FusedStage
from janus_ray.actors.metric_actor import MetricActor
from janus_ray.actors.pixel_store import PixelStoreError, merge_summaries, start_stores, store_count
from janus_ray.columns import result_columns
from janus_ray.errors import ConfigError, JanusRayError
from janus_ray.plan import ClusterShape, NodeShape, shape_from_cluster_yaml
from janus_ray.signals import sigint_deferred
from janus_ray.table import input_blocks

#: test-only: actors Ray gives (logical) GPUs compute on CPU in float32, and the planner takes each
#: GPU's memory from JANUS_RAY_FAKE_GPU_MEMORY_GB (default 80). For CI on machines without GPUs.
FAKE_GPUS_ENV = "JANUS_RAY_FAKE_GPUS"
FAKE_GPU_MEMORY_ENV = "JANUS_RAY_FAKE_GPU_MEMORY_GB"
#: the cluster launcher's autoscaling config on the head (``ray start --autoscaling-config=...``)
AUTOSCALER_CONFIG_ENV = "JANUS_RAY_AUTOSCALER_CONFIG"
DEFAULT_AUTOSCALER_CONFIG = "~/ray_bootstrap_config.yaml"


@dataclass(frozen=True)
class ActorClasses:
    """The Ray Data UDF classes ``stream_scores`` runs (the seam: ``pipeline.Stages.actors``).

    Benchmarks swap in subclasses that record timings; the defaults are the production classes.
    ``fused`` builds its in-process stages from ``decode`` and ``metric`` (passed to it), so one
    swap of ``decode`` / ``metric`` reaches both layouts.
    """

    decode: type = DecodeStage
    metric: type = MetricActor
    fused: type = FusedStage


class PoolStartError(JanusRayError):
    """An actor pool could not start within the bound: names the pool, its request and what is free."""


def fake_gpus() -> bool:
    return os.environ.get(FAKE_GPUS_ENV, "") == "1"


def fake_gpu_memory_gb() -> float:
    return float(os.environ.get(FAKE_GPU_MEMORY_ENV, "80"))


# ---------------------------------------------------------------------------------------------
# Joining and the cluster's shape
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Connection:
    """How this run reaches Ray. joined: an existing cluster (flag, RAY_ADDRESS or a Ray job)."""

    joined: bool
    address: str | None
    autoscaler_config: dict[str, Any] | None

    @property
    def can_autoscale(self) -> bool:
        return self.autoscaler_config is not None


def join_address(explicit: str | None) -> str | None:
    """The cluster to join: --ray-address, else RAY_ADDRESS (set inside `ray job submit` jobs), else None."""
    address = explicit or os.environ.get("RAY_ADDRESS") or None
    return None if address == "local" else address


#: seconds to wait for a TCP connection to a given cluster's address before refusing it
REACH_TIMEOUT_S = 5.0


ADDRESS_HELP = ("a Ray cluster is joined by 'auto' (the cluster started on this machine), HOST:PORT (its head's "
                "GCS address, port 6379 by default) or ray://HOST:10001 (Ray Client)")


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Refuse a cluster address that is malformed, an HTTP one (the dashboard's, which `ray job
    submit` takes, not a driver), or a ``host:port`` nothing answers on: ``ray.init`` would raise a
    traceback or retry for minutes (new users' trials: 207 s of "Failed to connect to GCS").
    'auto' and ``ray://`` addresses are left to Ray (``connect`` turns its errors into one line).

    Raises ConfigError naming the address and what is wrong."""
    import socket

    if address.startswith(("http://", "https://")):
        raise ConfigError(f"Ray address {address!r} is an HTTP (dashboard) address, the one `ray job submit` "
                          f"takes; {ADDRESS_HELP}. To run on that cluster as a job: scripts/submit_job.sh (README, "
                          "'Cluster'), which passes it to `ray job submit`.")
    if address == "auto" or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or any(c.isspace() for c in address):
        raise ConfigError(f"Ray address {address!r} is not an address: {ADDRESS_HELP}.")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"Cannot reach a Ray cluster at {address} ({exc.strerror or exc}): is its head node "
                          f"running and the port open? (`ray status --address {address}` on a node of it)") from None


def describe_joined(target: str) -> str:
    """Which cluster ``--ray-address`` / RAY_ADDRESS joined ('auto' may find one another user
    started on this machine): its GCS address, nodes, CPUs and GPUs."""
    import ray

    try:
        alive = sum(1 for node in ray.nodes() if node.get("Alive"))
        total = ray.cluster_resources()
        where = ray.get_runtime_context().gcs_address
    except Exception as exc:  # noqa: BLE001 - a description only
        return f"joined the Ray cluster at {target} ({type(exc).__name__} describing it)"
    return (f"joined the Ray cluster at {where} (address given: {target}): {alive} node(s), "
            f"{total.get('CPU', 0):g} CPU(s), {total.get('GPU', 0):g} GPU(s)")


def read_autoscaler_config() -> dict[str, Any] | None:
    """The cluster-launcher config the head's autoscaler runs with, when this machine has it."""
    path = Path(os.environ.get(AUTOSCALER_CONFIG_ENV, DEFAULT_AUTOSCALER_CONFIG)).expanduser()
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "available_node_types" not in data:
        return None
    return data


def connect(address: str | None) -> Connection:
    """Join the cluster named by ``address`` / RAY_ADDRESS, else start an embedded local Ray."""
    import ray

    target = join_address(address)
    if ray.is_initialized():
        joined = True
    elif target:
        check_reachable(target)
        try:
            ray.init(address=target, log_to_driver=True)
        except (ConnectionError, TimeoutError, ValueError) as exc:  # Ray's own words, without its traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"Cannot join the Ray cluster at {target}: {first} ({ADDRESS_HELP}).") from None
        joined = True
        print(f"[janus-ray] {describe_joined(target)}", file=sys.stderr, flush=True)
    else:
        # address="local": a new instance, never one that `ray start` left running on this machine
        quiet_ray_notices()
        try:
            with sigint_deferred("Ray has started, to stop it cleanly"):
                ray.init(address="local", include_dashboard=False, log_to_driver=True, configure_logging=False)
        except KeyboardInterrupt:
            if ray.is_initialized():  # held until Ray was up: stopped with every process it started
                disconnect()
            raise
        joined = False
        start_ray_data_helpers()
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
    return Connection(joined=joined, address=target, autoscaler_config=read_autoscaler_config() if joined else None)


def start_ray_data_helpers() -> list[str]:
    """Create Ray Data's per-cluster helper actors (stats, autoscaling coordinator, actor location
    tracker) now, as Ray Data itself would when the first dataset starts, so that their worker
    processes boot (~1 CPU second each) while the driver selects the work, not when the metric
    actors load their models. Each is Ray Data's own get-or-create (named actors: the dataset
    later finds them). Best effort: a Ray whose internals differ creates them later, as without
    this. Returns the helpers started."""
    started = []
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
        from ray.data._internal.execution.node_trackers import get_or_create_actor_location_tracker
        from ray.data._internal.stats import get_or_create_stats_actor
    except ImportError:
        return started
    for create in (get_or_create_stats_actor, get_or_create_autoscaling_coordinator,
                   get_or_create_actor_location_tracker):
        try:
            create()
            started.append(create.__name__)
        except Exception:  # noqa: BLE001 - an optimisation only: Ray Data creates it when it needs it
            pass
    return started


#: Ray's notices that say nothing to a janus-ray user: that the embedded Ray (private to this
#: process) uses token authentication, Ray's default, and that Ray Data's progress bars are off
#: (janus-ray prints its own progress lines; the bars are on when stderr is a terminal)
QUIET_RAY_LOGGERS = ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress")


def quiet_ray_notices() -> None:
    """Raise ``QUIET_RAY_LOGGERS`` to ERROR: their warnings are notices, never a problem of the run."""
    for name in QUIET_RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


#: Ray Data's driver-side threads of a finished stream (the executor's loop, the batch prefetchers,
#: the metadata fetcher): they may still call into Ray for a moment after the last batch
RAY_DATA_THREADS = ("StreamingExecutor-", "iter_threaded", "Prefetcher", "ray-data-metadata-prefetch",
                    "map_tp_")
#: seconds ``disconnect`` waits for them in all
QUIESCE_S = 15.0


def quiesce_ray_data(timeout_s: float = QUIESCE_S) -> list[str]:
    """Wait (at most ``timeout_s`` in all) for Ray Data's threads of finished streams to end, then
    collect garbage: reference cycles holding ObjectRefs or actor handles are freed while Ray is
    still up, not by a later collection after ``ray.shutdown``. Returns the threads still alive."""
    import gc
    import threading
    import time

    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and thread.name.startswith(RAY_DATA_THREADS):
            thread.join(max(0.0, deadline - time.monotonic()))
    gc.collect()
    return [t.name for t in threading.enumerate() if t.is_alive() and t.name.startswith(RAY_DATA_THREADS)]


def disconnect() -> None:
    """``ray.shutdown()`` once Ray Data's threads are done (``quiesce_ray_data``): the embedded Ray's
    processes are stopped (a joined cluster's driver only disconnects). A thread using Ray after the
    shutdown kills the process (Ray's fatal "The core worker has already been shutdown", exit 1).
    Unlike Ray's exit handler, it does not first sleep half a second for log lines."""
    import ray

    left = quiesce_ray_data()
    if left:
        print(f"janus_ray: Ray Data threads still running at shutdown: {', '.join(left)}", file=sys.stderr)
    stop_autoscaler_monitor()
    ray.shutdown()


#: the script of Ray's autoscaler monitor, a process ``ray.init`` starts beside the GCS
AUTOSCALER_MONITOR = os.path.join("autoscaler", "_private", "monitor.py")


def stop_autoscaler_monitor() -> list[int]:
    """Kill (SIGKILL) the autoscaler monitor of the Ray this process started; return the pids killed.

    Why: ``ray.shutdown`` stops the GCS first and then sends the monitor SIGTERM, whose handler
    tries to report its end to that GCS; Ray waits its full second for it, then kills it anyway
    (measured: 1.0 of a 1.2 s shutdown, Ray 2.60). The monitor of a fixed local node has nothing
    to scale or report. Only a child of this process running ``AUTOSCALER_MONITOR`` is killed (a
    joined cluster's monitor is never one); Linux only (/proc), elsewhere nothing."""
    me, killed = os.getpid(), []
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return killed
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read()
            parent = int(stat[stat.rindex(b")") + 2:].split()[1])
            if parent != me:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().decode(errors="replace").split("\0")
            if any(arg.endswith(AUTOSCALER_MONITOR) for arg in argv):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not readable: not ours to stop
            continue
    return killed


#: what a Linux machine has when torch.cuda may see a GPU: the NVIDIA driver, ROCm's kernel driver, WSL's GPU
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def may_have_gpus() -> bool:
    """False when torch cannot see a GPU here: Linux without any of ``GPU_DRIVER_PATHS``. Then the
    driver does not import torch (~1.6 s of CPU before the embedded Ray could start) to count none."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(path) for path in GPU_DRIVER_PATHS)


def local_shape(gpu_memory_gb: float | None) -> ClusterShape:
    """This machine, before any Ray starts (an embedded Ray gets exactly these CPUs and GPUs). The
    GPUs are counted by torch (imported only if ``may_have_gpus``)."""
    cpus = float(os.cpu_count() or 1)
    gpus, memory = 0, 0.0
    if may_have_gpus():
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        memory = gpu_memory_gb or min(torch.cuda.get_device_properties(i).total_memory for i in range(gpus)) / 1e9
    return ClusterShape(nodes=(NodeShape(gpus=gpus, gpu_memory_gb=memory, cpus=cpus, name="local"),))


def cluster_shape(connection: Connection, gpu_memory_gb: float | None = None) -> ClusterShape:
    """The alive nodes of the Ray cluster (GPU memory probed per GPU node unless given), plus the node
    types its autoscaler can add."""
    import ray

    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = dict(node.get("Resources", {}))
        gpus = int(res.pop("GPU", 0))
        cpus = float(res.pop("CPU", 0))
        custom = {k: v for k, v in res.items()
                  if not k.startswith("node:") and k not in ("memory", "object_store_memory", "accelerator_type")
                  and not k.startswith("accelerator_type")}
        memory = 0.0
        if gpus:
            memory = gpu_memory_gb or (fake_gpu_memory_gb() if fake_gpus() else _probe_gpu_memory(node["NodeID"]))
        nodes.append(NodeShape(gpus=gpus, gpu_memory_gb=memory, cpus=cpus, resources=custom,
                               name=node.get("NodeManagerAddress", "node")))
    node_types: tuple[NodeShape, ...] = ()
    if connection.autoscaler_config is not None:
        declared = shape_from_cluster_yaml(connection.autoscaler_config, None, every_gpu_gb=gpu_memory_gb)
        node_types = declared.node_types
    return ClusterShape(nodes=tuple(nodes), can_autoscale=bool(node_types), node_types=node_types)


def _probe_gpu_memory(node_id: str) -> float:
    """Total memory of one GPU of that node, GB (a one-GPU task pinned to the node)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_gpus=1, num_cpus=0)
    def total_memory() -> float:
        import torch

        if not torch.cuda.is_available():
            return 0.0
        return torch.cuda.get_device_properties(0).total_memory / 1e9

    ref = total_memory.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()
    try:
        memory = ray.get(ref, timeout=180)
    except ray.exceptions.GetTimeoutError as exc:
        raise ConfigError(f"Could not probe the GPU memory of node {node_id} within 180 s; pass --gpu-memory-gb.") from exc
    if not memory:
        raise ConfigError(
            f"Node {node_id} advertises GPUs but CUDA is not available there; pass --gpu-memory-gb "
            f"(or, in tests, {FAKE_GPUS_ENV}=1)."
        )
    return memory


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------
def stream_scores(
    rows: pd.DataFrame,
    plans: list,
    config,
    on_batch: Callable[[pd.DataFrame], None],
    *,
    decode_replicas: int = 1,
    decode_cpus: float = 1.0,
    autoscale: bool = False,
    journal_dir: str | None = None,
    actors: ActorClasses = ActorClasses(),
    embedded: bool = False,
) -> dict[str, Any] | None:
    """Stream ``rows`` through decoding and every metric's actors (``plans``: pipeline.MetricPlan of
    one phase); call ``on_batch`` per result batch. ``journal_dir``: the run's crash journal
    (actors/journal.py), so that no row is retried forever. ``actors``: the UDF classes to run.
    ``embedded``: this process started the local Ray it streams on (no other job can hold its CPUs,
    so the fused pool need not wait for all its actors: ``pool_start_wait_s``).

    Returns the pixel stores' merged ``summary()`` (bytes put, keys still held, waits) when the
    pixels went through stores (per-metric layout, ``config.pixel_store``), else None.

    Raises:
        PoolStartError: a pool's actors did not start within ``config.pool_start_timeout_s``.
    """
    import ray

    # Ray Data's advice when a pool has more actors than blocks (a small input): the block count is
    # janus-ray's choice (table.rows_per_block), so the advice to change it is noise to the user
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
    context = ray.data.DataContext.get_current()
    fused = use_fused_layout(plans, config)
    alive_nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    context.wait_for_min_actors_s = pool_start_wait_s(fused, alive_nodes, config.pool_start_timeout_s, embedded)
    cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
    # Blocks of many batches (not one decode batch of 16): each block costs a task per stage, a
    # projection task and a result batch on the driver (table.rows_per_block).
    # from_blocks: each block's metadata computed here (~3 ms per 1,024 rows); from_pandas would run
    # one remote task per block for it (and the driver waits for them): measured 3.5 CPU s and a
    # worker process at 20k rows, before the first actor starts. It also keeps our block count.
    ds = ray.data.from_blocks(input_blocks(rows, plans, config.decode_batch_size))
    stores: list = []
    summary = None
    try:
        if fused:
            ds = _fused_stage(ds, plans, config, cluster_cpus, journal_dir, actors)  # projects its own output
        else:
            store_spec = None
            if config.pixel_store:
                # the pixels go to the object store once, not once per stage hop (actors/pixel_store.py)
                try:
                    stores, store_spec = start_stores(store_count(decode_replicas))
                except PixelStoreError as exc:
                    print(f"janus_ray: {exc}; the pixels travel in the rows instead", file=sys.stderr, flush=True)
            ds = _separate_stages(ds, plans, config, decode_replicas, decode_cpus, autoscale, journal_dir, actors,
                                  store_spec)
            # num_cpus=0: the projection is trivial and must never wait for a CPU the actors hold, or
            # results would reach the driver (progress, resume cache) only at the end of the run.
            ds = ds.select_columns(result_columns(plans), num_cpus=0)
        for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
            on_batch(batch)
    except Exception as exc:
        # Ray Data raises GetTimeoutError("Timed out while starting actors ...") from the operator
        # start gated by wait_for_min_actors_s, possibly wrapped by the executor
        text = f"{exc!r} {exc.__cause__!r}"
        if isinstance(exc, ray.exceptions.GetTimeoutError) or "Timed out while starting actors" in text:
            raise PoolStartError(_pool_start_message(plans, config)) from exc
        raise
    finally:
        if stores:
            summary = _stop_stores(stores)
    return summary


def _stop_stores(stores: list) -> dict[str, Any] | None:
    """Return the stores' last ``summary()``, merged (None when one cannot answer), then kill them:
    that frees whatever pixels they still hold (rows whose ``done`` never came)."""
    import ray

    try:
        summary = merge_summaries(ray.get([s.summary.remote() for s in stores], timeout=10))
    except Exception:  # noqa: BLE001 - diagnostics only
        summary = None
    for store in stores:
        ray.kill(store)
    return summary


def stream_in_process(
    rows: pd.DataFrame,
    plans: list,
    config,
    on_batch: Callable[[pd.DataFrame], None],
    actors: ActorClasses = ActorClasses(),
    **_ignored: Any,
) -> None:
    """``stream_scores`` without Ray, for tests and benchmarks (``pipeline.Stages``): the fused
    stage (decode + every metric, the same classes the CPU layout runs in its actors) applied in this
    process, one batch of the largest metric batch size at a time, projected to the result columns.
    The layout arguments (replicas, autoscale, journal) are accepted and ignored."""
    keep = result_columns(plans)
    stage = actors.fused(
        decode=_decode_kwargs(plans, config, None),
        metrics=[_metric_kwargs(p, config, None, None) for p in plans],
        keep=keep,
        decode_class=actors.decode,
        metric_class=actors.metric,
    )
    step = max(1, max(p.batch_size for p in plans))
    for start in range(0, len(rows), step):
        part = rows.iloc[start : start + step]
        on_batch(pd.DataFrame(stage({c: part[c].to_numpy() for c in part.columns})))


def _pool_start_message(plans: list, config) -> str:
    import ray

    waiting = set()
    try:
        from ray.util.state import list_actors

        for actor in list_actors(filters=[("state", "!=", "ALIVE")], limit=1000, raise_on_missing_output=False):
            waiting.add(actor.class_name)
    except Exception:  # noqa: BLE001  (the state API is best effort here)
        pass
    named = [p for p in plans if any(_pool_class_name(p.metric) in name for name in waiting)] or plans
    free = {k: round(v, 2) for k, v in ray.available_resources().items() if not k.startswith("node:")}
    per_node = _free_per_node()
    asks = "; ".join(
        f"{p.metric}: {p.replicas} actor(s) x ({p.num_gpus:g} GPU, {p.num_cpus:g} CPU"
        + (f", {p.resources}" if p.resources else "") + ")"
        for p in named
    )
    return (
        f"The actor pool(s) {', '.join(p.metric for p in named)} did not start within "
        f"{config.pool_start_timeout_s:g} s. Asked for: {asks}. Free in the cluster now: {free}"
        + (f"; per node: {per_node}" if per_node else "") + ". "
        "An actor needs all it asks for on ONE node. "
        "Lower --replicas / --num-gpus, add nodes, or raise --pool-start-timeout."
    )


def _free_per_node() -> str:
    """What each node has free (node id prefix -> resources), or '' where Ray cannot say. A sum over
    the cluster can look as if a pool fits when no single node has its CPU and GPU together."""
    try:
        from ray._private.state import available_resources_per_node  # DeveloperAPI, no public equivalent

        nodes = available_resources_per_node()
    except Exception:  # noqa: BLE001  (best effort: the message stands without it)
        return ""
    def schedulable(name: str) -> bool:  # what an actor asks for: CPU, GPU, custom resources
        return not name.startswith(("node:", "accelerator_type")) and name not in ("memory", "object_store_memory")

    def describe(free: dict[str, float]) -> str:
        return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(free.items()) if schedulable(k)) + "}"

    return "; ".join(f"{node_id[:8]}: {describe(free)}" for node_id, free in sorted(nodes.items()))


def pool_start_wait_s(fused: bool, alive_nodes: int, timeout_s: float, embedded: bool = True) -> int:
    """Ray Data's ``wait_for_min_actors_s`` for one stream: ``timeout_s`` (the bound that ends a run
    whose pool cannot be placed with ``PoolStartError``), or -1 (actors provisioned asynchronously)
    for the fused CPU pool on the embedded one-node Ray. The bounded wait blocks until *every*
    actor of the pool is up, so the first fused actor ready idles until the last one is (0.6-2.7 s
    of a CPU at 2 CPUs, measured); on the embedded Ray the fused pool always fits (its actors share
    the node's CPUs less one, and no other job holds any), so that bound guards against nothing
    there. A joined cluster, even of one node, keeps the bound: another job may hold its CPUs. A
    constructor that raises still fails the run at once (Ray Data's
    ``max_consecutive_actor_init_deaths``, 0 by default)."""
    return -1 if fused and alive_nodes == 1 and embedded else int(timeout_s)


def use_fused_layout(plans: list, config) -> bool:
    return config.cpu_layout == "fused" and not any(p.num_gpus for p in plans)


def fused_replicas(config, cluster_cpus: float) -> int:
    """One single-threaded fused actor per CPU: decoding in one overlaps model work in another
    (measured on 2 CPUs, 6x200 tiny images: 111.5 s with 1 actor x 2 threads, 84.5 s with 2 x 1)."""
    return config.cpu_replicas or max(1, int(cluster_cpus))


def fused_actor_cpus(cluster_cpus: float, replicas: int) -> float:
    """The CPUs each fused actor asks Ray for: the cluster's less one, left for Ray Data's own
    tasks, shared by the replicas (at least 0.1)."""
    return max(0.1, (cluster_cpus - 1.0) / replicas)


def _decode_kwargs(plans: list, config, journal_dir: str | None = None) -> dict[str, Any]:
    weights_root = str(Path(config.weights_root).resolve())
    metrics = {p.metric: {"scorer": p.metric, "weights_root": weights_root, "options": p.options} for p in plans}
    return {"metrics": metrics, "max_pixels": config.max_image_pixels, "journal_dir": journal_dir}


def _metric_kwargs(plan, config, torch_threads: int | None, journal_dir: str | None = None) -> dict[str, Any]:
    device, dtype = plan.device, plan.dtype
    if fake_gpus() and plan.num_gpus:  # test-only: a logical GPU, computed on CPU in float32
        device, dtype, torch_threads = "cpu", "float32", 1
    return {
        "metric": plan.metric,
        "scorer": plan.metric,
        "weights_root": str(Path(config.weights_root).resolve()),
        "device": device,
        "dtype": dtype,
        "options": plan.options,
        "torch_threads": torch_threads,
        "journal_dir": journal_dir,
        "tf32": plan.tf32,
    }


def _pool_class_name(metric: str) -> str:
    return "MetricActor_" + "".join(c if c.isalnum() else "_" for c in metric)


def _named_actor_class(metric: str, base: type = MetricActor) -> type:
    """A subclass named after the metric, so Ray's actor list (and a start timeout) names the pool."""
    return type(_pool_class_name(metric), (base,), {"__module__": __name__})


def _fused_stage(ds, plans: list, config, cluster_cpus: float, journal_dir: str | None = None,
                 actors: ActorClasses = ActorClasses()):
    """CPU only: each actor decodes and runs every metric (see actors/fused_stage.py)."""
    import ray

    replicas = fused_replicas(config, cluster_cpus)
    threads = max(1, int(cluster_cpus // replicas))
    return ds.map_batches(
        actors.fused,
        fn_constructor_kwargs={
            "decode": _decode_kwargs(plans, config, journal_dir),
            "metrics": [_metric_kwargs(p, config, None, journal_dir) for p in plans],
            "torch_threads": threads,
            "keep": result_columns(plans),
            "decode_class": actors.decode,
            "metric_class": actors.metric,
        },
        batch_size=max(p.batch_size for p in plans),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=replicas),
        num_cpus=fused_actor_cpus(cluster_cpus, replicas),
        # Ray Data's actor pools default to max_restarts=-1 / max_task_retries=-1: a crashed actor is
        # restarted and its batch retried, so no row is lost or doubled (the kill test checks).
    )


def _separate_stages(ds, plans: list, config, decode_replicas: int, decode_cpus: float, autoscale: bool,
                     journal_dir: str | None = None, actors: ActorClasses = ActorClasses(),
                     pixel_store: dict[str, str] | None = None):
    """A CPU decode pool feeding one actor pool per metric (the GPU layout). ``pixel_store``: the
    spec of the store the pixels travel through (None: in the rows)."""
    import ray

    any_gpu = any(p.num_gpus for p in plans)
    ds = ds.map_batches(
        actors.decode,
        fn_constructor_kwargs={**_decode_kwargs(plans, config, journal_dir), "pixel_store": pixel_store},
        batch_size=config.decode_batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, decode_replicas)),
        num_cpus=decode_cpus if any_gpu else 0.5,
    )
    cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
    threads = max(1, int(cluster_cpus // max(1, len(plans))))
    # whole-GPU pools first: Ray Data starts pools in this order, so fractional actors cannot take
    # a slice of a GPU a whole-GPU actor was planned on
    ordered = sorted(plans, key=lambda p: -p.num_gpus)
    for plan in ordered:
        size = {"min_size": 1, "max_size": plan.replicas} if autoscale else {"size": plan.replicas}
        kwargs = _metric_kwargs(plan, config, threads if plan.num_gpus == 0 else None, journal_dir)
        if pixel_store is not None:  # the last stage tells the store which rows are finished
            kwargs.update(pixel_store=pixel_store, report_done=plan is ordered[-1])
        ds = ds.map_batches(
            _named_actor_class(plan.metric, actors.metric) if plan.num_gpus else actors.metric,
            fn_constructor_kwargs=kwargs,
            batch_size=plan.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(**size),
            num_gpus=plan.num_gpus or None,
            num_cpus=plan.num_cpus,
            resources=plan.resources or None,
            # Same restart/retry defaults as above: the kill test covers this layout too.
        )
    return ds

"""The placement plan: a pure function of (cluster shape, run config). Imports no Ray.

Input: a ``ClusterShape`` (nodes with GPUs, GPU memory, CPUs, custom resources; node types an
autoscaler may add) and ``MetricDemand`` records (built from the RunConfig and each scorer's cost
ClassVars by ``demands_from_config``). Output: a ``Plan`` of one or more phases, each a set of
per-metric pools (replicas, GPU share and CPUs per replica, batch, GPU memory per actor, images/s
per replica) plus the decode pool.

Objective: the most images/s of the whole run, i.e. the largest min over metrics of
replicas x per-replica rate, using every GPU. Layout of one phase on GPUs:
* "whole-GPU" metrics (the expensive ones) get one replica per GPU, as many GPUs as balance the rates;
* the remaining metrics are "packed": one replica of each on every remaining GPU, equal shares, so
  any order Ray starts them in tiles the GPUs exactly. Rows flow through every pool, so a packed GPU
  processes 1 / sum(1 / rate) images/s whatever the shares say (shares are Ray bookkeeping only).
Memory per GPU is checked for the worst co-residence Ray's fractional packing could produce and must
stay <= 90 % of the GPU. When no layout holds every metric at once, batches shrink (to 8), then the
metrics split into phases run one after another.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from janus_ray.errors import ConfigError

#: usable share of each GPU's memory (the rest: allocator fragmentation, cuDNN workspaces)
GPU_MEMORY_FRACTION = 0.9
#: per-actor CUDA context + cuBLAS workspace + caching-allocator slack, GB (typical torch 2.x; estimate)
CUDA_CONTEXT_GB = 1.0
#: effective dense TFLOP/s of one A100-class GPU per dtype: 19.5 fp32 (no TF32) / 312 bf16-fp16 peak
#: at ~65 % / ~40 % utilisation (estimate; measured_costs.json replaces the rates)
EFFECTIVE_TFLOPS = {"float32": 13.0, "bfloat16": 120.0, "float16": 120.0}
#: effective fp32 GFLOP/s of one CPU core running torch (estimate)
CPU_GFLOPS_PER_CORE = 30.0
#: images one decode actor (1 CPU) opens and transforms for every metric per second (estimate)
DECODE_IMAGES_PER_CPU_S = 25.0
#: automatic batches never shrink below this to fit memory (smaller ones waste GPU time)
MIN_AUTO_BATCH = 8
#: CPU shares tried for every GPU actor, largest first
GPU_ACTOR_CPUS = (1.0, 0.5, 0.25, 0.1, 0.05)
#: GPU memory per instance type of cluster.yaml's providers (vendor data sheets)
INSTANCE_GPU_MEMORY_GB = {
    "g5.": 24.0,  # NVIDIA A10G
    "g6.": 24.0,  # NVIDIA L4
    "g6e.": 48.0,  # NVIDIA L40S
    "p4d.24xlarge": 40.0,  # A100 40 GB
    "p4de.24xlarge": 80.0,  # A100 80 GB
    "p5.48xlarge": 80.0,  # H100 80 GB
}

DEFAULT_BATCH_SIZE = {"vqascore": 16, "itmscore": 32, "imagereward": 32}
SMALL_MODEL_BATCH_SIZE = 64
CPU_BATCH_SIZE = 8


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeShape:
    """``count`` identical nodes. gpu_memory_gb: per GPU; resources: custom Ray resources per node."""

    gpus: int = 0
    gpu_memory_gb: float = 0.0
    cpus: float = 1.0
    resources: dict[str, float] = field(default_factory=dict)
    count: int = 1
    name: str = "node"


@dataclass(frozen=True)
class ClusterShape:
    """The nodes present, and (when an autoscaler runs) the node types it can add, ``count`` = max."""

    nodes: tuple[NodeShape, ...]
    can_autoscale: bool = False
    node_types: tuple[NodeShape, ...] = ()

    def planned_nodes(self) -> list[NodeShape]:
        """What the plan fills: the nodes present plus, when autoscaling, every addable node."""
        return [*self.nodes, *(self.node_types if self.can_autoscale else ())]

    @property
    def gpus_total(self) -> int:
        return sum(n.gpus * n.count for n in self.planned_nodes())

    @property
    def cpus_total(self) -> float:
        return sum(n.cpus * n.count for n in self.planned_nodes())

    def resource_total(self, name: str) -> float:
        return sum(n.resources.get(name, 0.0) * n.count for n in self.planned_nodes())

    @classmethod
    def uniform(cls, gpus: int, gpu_memory_gb: float, cpus: float, nodes: int = 1) -> ClusterShape:
        return cls(nodes=(NodeShape(gpus=gpus, gpu_memory_gb=gpu_memory_gb, cpus=cpus, count=nodes),))


@dataclass
class MetricDemand:
    """What one metric needs. Memory in GB at the compute dtype; rate on a whole GPU / per CPU core.

    batch_size / num_gpus / replicas: the user's overrides (None: the planner chooses).
    """

    metric: str
    weights_gb: float
    activation_gb_per_image: float
    images_per_s_gpu: float
    images_per_s_cpu: float
    dtype: str
    default_batch: int
    batch_size: int | None = None
    num_gpus: float | None = None
    replicas: int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    source: str = "estimate"

    def memory_gb(self, batch: int) -> float:
        return CUDA_CONTEXT_GB + self.weights_gb + batch * self.activation_gb_per_image


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
@dataclass
class Pool:
    """One metric's actor pool: num_gpus / num_cpus per replica, gpu_memory_gb per actor."""

    metric: str
    replicas: int
    num_gpus: float
    num_cpus: float
    batch_size: int
    gpu_memory_gb: float
    images_per_s: float  # per replica
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.replicas * self.images_per_s


@dataclass
class Phase:
    pools: dict[str, Pool]
    gpu_memory_gb_per_gpu: float  # the fullest GPU (worst case of Ray's packing)
    images_per_s: float

    @property
    def gpus_used(self) -> float:
        return sum(p.replicas * p.num_gpus for p in self.pools.values())


@dataclass
class DecodePool:
    max_replicas: int
    num_cpus: float


@dataclass
class Plan:
    phases: list[Phase]
    decode: DecodePool
    layout: str  # gpu | cpu-fused | cpu-per-metric
    gpus_total: int
    cpus_total: float
    autoscale: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def gpus_used(self) -> float:
        return round(max((p.gpus_used for p in self.phases), default=0.0), 4)

    @property
    def images_per_s(self) -> float:
        """Whole run: phases run one after another, so their times per image add up."""
        if any(p.images_per_s <= 0 for p in self.phases):
            return 0.0
        return 1.0 / sum(1.0 / p.images_per_s for p in self.phases)

    def to_json(self) -> dict[str, Any]:
        """The documented ``janus-ray plan --json`` schema."""
        return {
            "gpus_total": self.gpus_total,
            "gpus_used": self.gpus_used,
            "cpus_total": self.cpus_total,
            "phases": [
                {
                    "metrics": {
                        m: {
                            "replicas": p.replicas,
                            "num_gpus": p.num_gpus,
                            "num_cpus": p.num_cpus,
                            "batch_size": p.batch_size,
                            "gpu_memory_gb": round(p.gpu_memory_gb, 2),
                            "images_per_s": _rate(p.images_per_s),
                        }
                        for m, p in phase.pools.items()
                    },
                    "gpu_memory_gb_per_gpu": round(phase.gpu_memory_gb_per_gpu, 2),
                    "images_per_s": _rate(phase.images_per_s),
                }
                for phase in self.phases
            ],
            "images_per_s": _rate(self.images_per_s),
            "warnings": list(self.warnings),
        }

    def table(self) -> str:
        """Human-readable plan, printed by ``janus-ray plan`` and before ``eval`` starts."""
        lines = [
            f"plan: {self.layout} layout, {self.gpus_used:g}/{self.gpus_total} GPU(s) used, {self.cpus_total:g} CPU(s)"
            + (", autoscaling" if self.autoscale else "")
        ]
        gpu = self.layout == "gpu"  # CPU layouts: no GPU share or GPU memory to show
        fused = self.layout == "cpu-fused"  # one pool of actors running every metric: no per-metric pools
        for i, phase in enumerate(self.phases, 1):
            fullest = f", fullest GPU ~{phase.gpu_memory_gb_per_gpu:.1f} GB" if gpu else ""
            lines.append(f"phase {i}/{len(self.phases)}: ~{phase.images_per_s:.3g} img/s{fullest}")
            if fused:
                lines.append(f"  {'metric':<12} {'batch':>5}")
                lines += [f"  {m:<12} {p.batch_size:>5}" for m, p in phase.pools.items()]
                continue
            gpu_head = f" {'GPU':>7}" if gpu else ""
            mem_head = f" {'GB/actor':>8}" if gpu else ""
            lines.append(f"  {'metric':<12} {'replicas':>8}{gpu_head} {'CPU':>5} {'batch':>5}{mem_head} {'img/s/replica':>13}")
            for m, p in phase.pools.items():
                extra = f"  {p.resources}" if p.resources else ""
                gpu_cells = f" {p.num_gpus:>7g}" if gpu else ""
                mem_cell = f" {p.gpu_memory_gb:>8.1f}" if gpu else ""
                lines.append(
                    f"  {m:<12} {p.replicas:>8}{gpu_cells} {p.num_cpus:>5g} {p.batch_size:>5}{mem_cell} "
                    f"{p.images_per_s:>13.3g}{extra}"
                )
        if fused:
            pool = next((p for ph in self.phases for p in ph.pools.values()), None)
            replicas, cpus = (pool.replicas, pool.num_cpus) if pool else (0, 0.0)
            lines.append(f"fused: {replicas} actor(s) x {cpus:g} CPU, each decoding an image once and running "
                         "every metric above on it")
        else:
            lines.append(f"decode: up to {self.decode.max_replicas} actor(s) x {self.decode.num_cpus:g} CPU")
        # The estimate uses each model's real size (FLOPs), whatever the weight files hold (tiny test ones too).
        where = "" if gpu else " on CPU, from float32 costs whatever --dtype says"
        lines.append(f"estimated: ~{self.images_per_s:.3g} images/s for the whole run{where} "
                     "(at the real models' sizes, whatever the weight files hold)")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
@dataclass
class _Gpu:
    node: int  # index into the expanded node list
    capacity_gb: float  # usable memory (GPU_MEMORY_FRACTION applied)
    resources: dict[str, float]
    free_share: float = 1.0
    actors_gb: list[float] = field(default_factory=list)


def _expand(nodes: Iterable[NodeShape]) -> tuple[list[NodeShape], list[_Gpu]]:
    expanded = [n for n in nodes for _ in range(n.count)]
    gpus = [
        _Gpu(node=i, capacity_gb=n.gpu_memory_gb * GPU_MEMORY_FRACTION, resources=n.resources)
        for i, n in enumerate(expanded)
        for _ in range(n.gpus)
    ]
    return expanded, gpus


def _has_resources(gpu: _Gpu, wanted: dict[str, float]) -> bool:
    return all(gpu.resources.get(name, 0.0) >= min(amount, 1.0) for name, amount in wanted.items())


def _batch(d: MetricDemand, batches: dict[str, int]) -> int:
    return batches.get(d.metric, d.batch_size or d.default_batch)


def _worst_fill(mems: list[float], copies: int, per_gpu: int) -> float:
    """Largest memory ``per_gpu`` actors can take on one GPU when each kind has ``copies`` replicas."""
    pool = sorted((m for m in mems for _ in range(min(copies, per_gpu))), reverse=True)
    return sum(pool[:per_gpu])


def _round_share(share: float) -> float:
    return math.floor(share * 1e4) / 1e4  # Ray accounts GPU shares in 1e-4 units


@dataclass
class _Candidate:
    score: float
    pools: dict[str, Pool]
    fullest: float
    unused: int


def _plan_gpu_phase(demands: list[MetricDemand], gpus_in: list[_Gpu], batches: dict[str, int],
                    spread: bool = False) -> _Candidate | str:
    """One phase: every metric resident at once. Returns the best layout, or why none fits.
    ``spread``: the packed group may spread over whole free GPUs too (fewer of its metrics per GPU,
    each on fewer GPUs), as it always may over partly used ones (see ``_assign``)."""
    gpus = [_Gpu(g.node, g.capacity_gb, g.resources) for g in gpus_in]
    pools: dict[str, Pool] = {}
    # 1. user-fixed GPU shares first (overrides win), first fit; failure names the sums
    for d in [d for d in demands if d.num_gpus is not None]:
        mem = d.memory_gb(_batch(d, batches))
        for _ in range(d.replicas or 1):
            need = d.num_gpus
            if need >= 1:
                free = [g for g in gpus if g.free_share >= 1 and _has_resources(g, d.resources) and mem <= g.capacity_gb]
                if len(free) < need:
                    return f"{d.metric} asks for {need:g} whole GPU(s) per replica; not enough free GPUs are left"
                for g in free[: int(need)]:
                    g.free_share, g.actors_gb = 0.0, [*g.actors_gb, mem]
                continue
            fits = [g for g in gpus if g.free_share + 1e-9 >= need and _has_resources(g, d.resources)
                    and sum(g.actors_gb) + mem <= g.capacity_gb]
            if not fits:
                return f"{d.metric} ({need:g} GPU, {mem:.1f} GB per actor) fits on no GPU next to the others"
            fits[0].free_share -= need
            fits[0].actors_gb.append(mem)
        pools[d.metric] = Pool(d.metric, d.replicas or 1, d.num_gpus, 1.0, _batch(d, batches), mem,
                               d.images_per_s_gpu * min(1.0, d.num_gpus), dict(d.resources))
    auto = sorted([d for d in demands if d.num_gpus is None], key=lambda d: 1.0 / d.images_per_s_gpu, reverse=True)
    whole = [g for g in gpus if g.free_share >= 1 - 1e-9]
    partial = [g for g in gpus if 1e-9 < g.free_share < 1 - 1e-9]
    best: _Candidate | None = None
    reason = "no GPU has room for them"
    for j in range(len(auto) + 1):
        big, packed = auto[:j], auto[j:]
        if not big:
            spans = [0]
        elif packed:  # the packed group keeps at least one whole GPU unless partly used GPUs can hold it
            spans = range(j, len(whole) - (0 if partial else 1) + 1)
        else:
            spans = [len(whole)]
        for n_big in spans:
            counts = {d.metric: 1 for d in big}
            for _ in range(n_big - j):  # water-filling: each extra GPU to the slowest big metric
                slowest = min(big, key=lambda d: counts[d.metric] * d.images_per_s_gpu)
                counts[slowest.metric] += 1
            result = _assign(big, counts, packed, whole, partial, batches, spread)
            if isinstance(result, str):
                reason = result
                continue
            cand_pools, fullest, unused = result
            all_pools = {**pools, **cand_pools}
            score = min(p.rate for p in all_pools.values()) if all_pools else 0.0
            fixed_fullest = max((sum(g.actors_gb) for g in gpus), default=0.0)
            cand = _Candidate(score, all_pools, max(fullest, fixed_fullest), unused)
            if best is None or (cand.score, -cand.unused) > (best.score + 1e-9, -best.unused):
                best = cand
    if best is None:
        if not auto and pools:
            fullest = max((sum(g.actors_gb) for g in gpus), default=0.0)
            return _Candidate(min(p.rate for p in pools.values()), pools, fullest, 0)
        return reason
    return best


def _assign(big, counts, packed, whole, partial, batches, spread=False):
    """Place whole-GPU metrics (best fit), then the packed group on every GPU left that holds it
    (``spread``: or spread over them, fewer of its metrics per GPU, when all do not fit on one)."""
    free = list(whole)
    pools: dict[str, Pool] = {}
    fullest = 0.0
    for d in sorted(big, key=lambda d: sum(1 for g in free if _has_resources(g, d.resources))):
        mem = d.memory_gb(_batch(d, batches))
        eligible = sorted((g for g in free if _has_resources(g, d.resources) and mem <= g.capacity_gb),
                          key=lambda g: g.capacity_gb)
        if len(eligible) < counts[d.metric]:
            return f"{d.metric} needs {mem:.1f} GB per actor and {counts[d.metric]} such GPU(s)"
        for g in eligible[: counts[d.metric]]:
            free.remove(g)
        fullest = max(fullest, mem)
        pools[d.metric] = Pool(d.metric, counts[d.metric], 1.0, 1.0, _batch(d, batches), mem, d.images_per_s_gpu,
                               dict(d.resources))
    unused = 0
    if packed:
        wanted: dict[str, float] = {}
        for d in packed:
            for name, amount in d.resources.items():
                wanted[name] = max(wanted.get(name, 0.0), amount)
        mems = [d.memory_gb(_batch(d, batches)) for d in packed]
        hosts = [g for g in free if _has_resources(g, wanted)] or [g for g in partial if _has_resources(g, wanted)]
        if not free:
            hosts = [g for g in partial if _has_resources(g, wanted)]
        # per_gpu: the packed actors Ray may put on one GPU (share = free share / per_gpu). Every
        # packed metric on every host first; if they do not fit together beside what a host already
        # holds (e.g. VQAScore replicas on every GPU), fewer per GPU and fewer replicas each, so
        # that the group spreads over the hosts. The memory check is the worst case of Ray's packing.
        # Ray places a packed actor on any GPU with the share free, not only on the hosts chosen
        # here: every GPU it may reach must hold its worst case (``_packed_share``)
        reachable = [g for g in [*free, *partial] if g.free_share > 1e-9 and _has_resources(g, wanted)]
        found = None
        # spreading (fewer than all per GPU) on GPUs partly held by --num-gpus/--replicas pools; with
        # whole GPUs free, a metric that does not pack gets whole GPUs of its own instead, unless no
        # such layout fits in one phase (``spread``, ``_fit_phase``'s second pass)
        for per_gpu in range(len(packed), 0, -1) if spread or not free else [len(packed)]:
            fit = hosts
            while True:  # fewer hosts, fewer copies of each metric, a lighter worst case: to a fixed point
                copies = len(fit) * per_gpu // len(packed)  # replicas of each packed metric
                if copies < 1:
                    break
                room = [g for g in fit if sum(g.actors_gb) + _worst_fill(mems, copies, per_gpu) <= g.capacity_gb]
                if len(room) == len(fit):
                    break
                fit = room
            if copies >= 1:
                found = _packed_share(_round_share(min(g.free_share for g in fit) / per_gpu), copies, reachable, mems)
                if found is not None:
                    hosts = fit
                    break
        if found is None:
            need = _worst_fill(mems, 1, len(packed))
            return f"{', '.join(d.metric for d in packed)} need {need:.1f} GB together on one GPU"
        share, copies, per_gpu_of = found
        unused = len(free) - len([g for g in free if per_gpu_of.get(id(g), 0) > 0])
        capacity = sum(min(g.free_share, share * per_gpu_of[id(g)]) for g in reachable)
        group_rate = capacity / sum(1.0 / d.images_per_s_gpu for d in packed)
        # spread thin, a metric cannot go faster than its replicas on whole GPUs
        group_rate = min(group_rate, min(copies * d.images_per_s_gpu for d in packed))
        fullest = max(fullest, max(sum(g.actors_gb) + _worst_fill(mems, copies, per_gpu_of[id(g)])
                                   for g in reachable))
        for d, mem in zip(packed, mems):
            pools[d.metric] = Pool(d.metric, copies, share, 1.0, _batch(d, batches), mem, group_rate / copies,
                                   dict(d.resources))
    else:
        unused = len(free)
    return pools, fullest, unused


def _packed_share(share: float, copies: int, reachable: list[_Gpu], mems: list[float]):
    """The packed group's GPU share, raised until no GPU Ray may put its actors on gets more of them
    than its memory holds (Ray places by share only: a GPU with a 0.33 share free takes two actors
    of 0.1333, whatever the plan meant for it). Returns (share, replicas of each metric, {id(gpu):
    how many packed actors it may get}), or None when the raised share leaves too few places."""
    for _ in range(len(reachable) + 2):
        raised = share
        for g in reachable:
            most = min(int(g.free_share / share + 1e-9), copies * len(mems))
            k = most
            while k > 0 and sum(g.actors_gb) + _worst_fill(mems, copies, k) > g.capacity_gb:
                k -= 1
            if k < most:  # block the (k + 1)-th actor: a share just above free / (k + 1)
                raised = max(raised, _round_share(g.free_share / (k + 1)) + 1e-4)
        slots = {id(g): min(int(g.free_share / raised + 1e-9), copies * len(mems)) for g in reachable}
        copies = min(copies, sum(slots.values()) // len(mems))
        if copies < 1 or raised > 1.0:
            return None
        if raised == share:
            return round(share, 4), copies, slots
        share = raised
    return None


def _fit_phase(demands: list[MetricDemand], gpus: list[_Gpu]) -> tuple[_Candidate, dict[str, int]] | str:
    """A phase with every metric of ``demands``; automatic batches halve (to MIN_AUTO_BATCH) to fit.
    Layouts that give a metric whole GPUs of its own come first; only when none fits, the packed
    group spreads over whole GPUs (one phase instead of two: 2 x 24 GB with the six metrics)."""
    first = None
    for spread in (False, True):
        batches = {d.metric: d.batch_size or d.default_batch for d in demands}
        while True:
            result = _plan_gpu_phase(demands, gpus, batches, spread)
            if not isinstance(result, str):
                return result, batches
            shrinkable = [d for d in demands if d.batch_size is None and batches[d.metric] > MIN_AUTO_BATCH]
            if not shrinkable:
                break
            d = max(shrinkable, key=lambda d: batches[d.metric] * d.activation_gb_per_image)
            batches[d.metric] = max(MIN_AUTO_BATCH, batches[d.metric] // 2)
        first = first or result  # the whole-GPU pass's reason: it names the metric that does not fit
    return first


def _refuse_unplaceable(demands: list[MetricDemand], gpus: list[_Gpu]) -> None:
    """A model that fits no GPU at batch 1: refuse before Ray starts, with the ways out."""
    for d in demands:
        eligible = [g for g in gpus if _has_resources(g, d.resources)]
        if not eligible:
            continue  # reported by the resource check
        need = d.memory_gb(1)
        capacity = max(g.capacity_gb for g in eligible)
        if need > capacity:
            ways = [f"a GPU with more than {need / GPU_MEMORY_FRACTION:.3g} GB"]
            if d.metric == "vqascore":
                ways.insert(0, "the smaller VQA model (--metrics clip-flant5-xl ..., or --vqa_model clip-flant5-xl)")
            ways.append(f"--metrics without {d.metric}")
            raise ConfigError(
                f"{d.metric} needs ~{need:.1f} GB of GPU memory ({d.weights_gb:.1f} GB weights in {d.dtype} + "
                f"context + one image), but the largest GPU it may use has {capacity / GPU_MEMORY_FRACTION:.3g} GB "
                f"({capacity:.3g} GB usable at {GPU_MEMORY_FRACTION:.0%}). Ways out: {'; '.join(ways)}."
            )


def _check_overrides(demands: list[MetricDemand], shape: ClusterShape, gpus: list[_Gpu]) -> None:
    """Summed user requests beyond the cluster: refuse with the sums."""
    zero = [d.metric for d in demands if d.num_gpus == 0]
    if zero and gpus:  # a GPU plan runs every metric pool on CUDA: a 0 share would get no device
        raise ConfigError(
            f"--num-gpus {zero[0]}=0: in a run on GPUs every metric's actors need a GPU share. Give "
            f"{', '.join(zero)} a share above 0 (a fraction such as 0.1 packs it beside other models), "
            "or run every metric on CPU with --device cpu."
        )
    fixed = [d for d in demands if d.num_gpus]
    asked = sum(d.num_gpus * (d.replicas or 1) for d in fixed)
    if asked > len(gpus) + 1e-9:
        parts = " + ".join(f"{d.metric} {d.replicas or 1} x {d.num_gpus:g}" for d in fixed)
        raise ConfigError(f"--num-gpus/--replicas ask for {parts} = {asked:g} GPUs; the cluster has {len(gpus)}.")
    for name in sorted({r for d in demands for r in d.resources}):
        users = [d for d in demands if name in d.resources]
        total = shape.resource_total(name)
        wanted = sum(d.resources[name] * (d.replicas or 1) for d in users)
        if total == 0:
            raise ConfigError(
                f"{', '.join(d.metric for d in users)} asks for {min(d.resources[name] for d in users):g} {name} per actor "
                f"but the Ray cluster has 0 {name}"
                + (" and no node type its autoscaler can add brings it." if shape.can_autoscale
                   else ". Remove that setting or run on a cluster that has it.")
            )
        if wanted > total + 1e-9:
            raise ConfigError(f"--resource asks for {wanted:g} {name} in all (replicas x amount); the cluster has {total:g}.")
    if fixed and gpus:
        by_gpu_mem = sum(d.memory_gb(d.batch_size or d.default_batch) * (d.replicas or 1) for d in fixed if d.num_gpus < 1)
        share = sum(d.num_gpus * (d.replicas or 1) for d in fixed if d.num_gpus < 1)
        capacity = max(g.capacity_gb for g in gpus)
        if share and share <= 1 and by_gpu_mem > capacity:
            raise ConfigError(
                f"--num-gpus packs {' + '.join(f'{d.metric} ({d.memory_gb(d.batch_size or d.default_batch):.1f} GB)' for d in fixed if d.num_gpus < 1)}"
                f" = {by_gpu_mem:.1f} GB onto one GPU of {capacity / GPU_MEMORY_FRACTION:.0f} GB ({capacity:.1f} GB usable)."
            )


def _decode_share(nodes: list[NodeShape], leftovers: list[float]) -> float | None:
    """The largest CPU request (from GPU_ACTOR_CPUS) for a decode actor that can never take CPUs a GPU
    actor was planned on, or None.

    Ray Data starts the pools in order (decode first) and spreads actors over the nodes
    (``DataContext.scheduling_strategy`` "SPREAD"), so the first decode actor may land on any node with
    the CPUs it asks for, GPU nodes included, before any GPU actor exists. Every such node must keep
    that request beyond its GPU actors' CPUs (``leftovers``), else a GPU actor waits for a CPU forever
    (seen on three 1-CPU nodes: decode x 1 CPU took a GPU node's only CPU).
    """
    for share in GPU_ACTOR_CPUS:
        can_host = [left for n, left in zip(nodes, leftovers) if n.cpus + 1e-9 >= share]
        if can_host and all(left + 1e-9 >= share for left in can_host):
            return share
    return None


def _overrides_summary(demands: list[MetricDemand], gpus: list[_Gpu]) -> str:
    """The sums behind a refused override: what was fixed, what must fit beside it, on which GPUs."""
    def mem(d: MetricDemand) -> str:  # at the smallest batch the planner tries (a set --batch-size stays)
        return f"{d.memory_gb(d.batch_size or min(d.default_batch, MIN_AUTO_BATCH)):.1f} GB"

    fixed = [d for d in demands if d.num_gpus is not None]
    others = [d for d in demands if d.num_gpus is None]
    usable = sorted({round(g.capacity_gb, 1) for g in gpus})
    return (
        "With --num-gpus/--replicas every metric must be resident at once (no phases), at least: "
        + " + ".join(f"{d.metric} {d.replicas or 1} x {d.num_gpus:g} GPU ({mem(d)} each)" for d in fixed)
        + (f", beside {', '.join(f'{d.metric} ({mem(d)})' for d in others)}" if others else "")
        + f", on {len(gpus)} GPU(s) with {'/'.join(f'{u:g}' for u in usable)} GB usable each. "
        "Lower those settings, or drop them: the planner then runs the metrics in phases when they do not fit together."
    )


def _cpus_for_gpu_actors(phases: list[Phase], nodes: list[NodeShape], gpus: list[_Gpu], plan_rate: float):
    """(CPUs per GPU actor, CPUs per decode actor, CPUs left for decoding, warning or None); refuses a
    node short of CPUs.

    Ray decides which GPU each actor lands on, so a node is checked for the most GPU actors it could
    host in any phase: per GPU one actor per pool, at most 1 / (smallest GPU share) of them. The
    decode actor's request fits next to them on any node it may land on (``_decode_share``).
    """
    gpus_per_node: dict[int, int] = {}
    for g in gpus:
        gpus_per_node[g.node] = gpus_per_node.get(g.node, 0) + 1
    worst: dict[int, int] = {}
    for ph in phases:
        n_actors = sum(p.replicas for p in ph.pools.values())
        per_gpu = min(len(ph.pools), int(1 / min(p.num_gpus for p in ph.pools.values()) + 1e-6))
        for node, n in gpus_per_node.items():
            worst[node] = max(worst.get(node, 0), min(n_actors, n * per_gpu))
    need_decode = max(1.0, plan_rate / DECODE_IMAGES_PER_CPU_S)
    fitting = [c for c in GPU_ACTOR_CPUS if all(worst[i] * c <= nodes[i].cpus for i in worst)]
    if not fitting:
        i = max(worst, key=lambda i: worst[i] / max(nodes[i].cpus, 1e-9))
        raise ConfigError(
            f"{_node_label(nodes[i])} has {nodes[i].cpus:g} CPU(s) for up to {worst[i]} GPU actor(s) (every "
            f"metric's replicas on its GPUs), which need at least {GPU_ACTOR_CPUS[-1]:g} CPU each: give the node "
            "more CPUs, or use fewer GPUs or fewer replicas (--replicas METRIC=N)."
        )
    options = []  # (GPU actor CPUs, decode actor CPUs, CPUs left), largest GPU actor share first
    for c in fitting:
        leftovers = [n.cpus - worst.get(i, 0) * c for i, n in enumerate(nodes)]
        share = _decode_share(nodes, leftovers)
        if share is not None:
            options.append((c, share, sum(leftovers)))
    if not options:
        c = fitting[-1]
        i = min(worst, key=lambda i: nodes[i].cpus - worst[i] * c)  # the node left with the fewest CPUs
        raise ConfigError(
            f"{_node_label(nodes[i])} has {nodes[i].cpus:g} CPU(s) for up to {worst.get(i, 0)} GPU actor(s) at "
            f"{c:g} CPU each and nothing left for a decode actor, which Ray may place on any node: give the "
            "node more CPUs, or use fewer GPUs or fewer replicas (--replicas METRIC=N)."
        )
    for c, share, left in options:
        if decode_capacity(left) >= need_decode:  # the whole decode actors, not the fraction left
            return c, share, left, None
    c, share, left = options[-1]
    if decode_capacity(left) * DECODE_IMAGES_PER_CPU_S >= plan_rate:  # under 1 CPU left, but enough for this rate
        return c, share, left, None
    return c, share, left, (f"{left:g} CPU(s) left for decoding: {decode_actors(left)} decode actor(s), "
                            f"~{decode_capacity(left) * DECODE_IMAGES_PER_CPU_S:.0f} img/s, cannot keep the GPUs fed "
                            f"(~{plan_rate:.0f} img/s): decoding limits the run")


def _node_label(node: NodeShape) -> str:
    """How a message names a node: a described uniform cluster's nodes have no name of their own."""
    return "Each node" if node.name == "node" else f"Node {node.name}"


@dataclass(frozen=True)
class RunEstimate:
    """How long ``plan`` expects a run over some folders to take: ``images`` (rows the scan found,
    after --limit, before the resume cache) at the plan's whole-run ``images_per_s``. Model loading
    and Ray's start are not included (minutes for the real VQAScore checkpoint)."""

    folders: int
    images: int
    images_per_s: float

    @property
    def seconds(self) -> float:
        return self.images / self.images_per_s if self.images_per_s > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        seconds = self.seconds
        return {"folders": self.folders, "images": self.images,
                "estimated_seconds": _rate(seconds) if seconds != float("inf") else None}

    def line(self) -> str:
        return (f"run: {self.images} image(s) in {self.folders} folder(s) (before the resume cache): "
                f"~{format_duration(self.seconds)} at the estimated rate, plus model loading")


def run_estimate(plan: Plan, images_per_folder: list[int]) -> RunEstimate:
    """``RunEstimate`` for folders holding ``images_per_folder`` rows to score under ``plan``."""
    return RunEstimate(folders=len(images_per_folder), images=sum(images_per_folder), images_per_s=plan.images_per_s)


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min', '2 d 4 h' (rounded: an estimate, not a measurement)."""
    if seconds != seconds or seconds == float("inf"):
        return "unknown time"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _rate(value: float) -> float:
    """A rate for the JSON plan: 4 significant digits (a CPU rate of 0.0104 img/s is not 0.0)."""
    return float(f"{value:.4g}")


def decode_actors(left: float) -> int:
    """Decode actors for ``left`` CPUs: one per whole CPU (each keeps a core busy whatever share it
    asks Ray for), at least one."""
    return max(1, int(left + 1e-9))


def decode_capacity(left: float) -> float:
    """CPUs that decode with ``left`` CPUs left: the whole ones the decode actors use (3 of 3.9), or
    the fraction when under one."""
    return min(left, decode_actors(left))


def _share_for_replicas(demands: list[MetricDemand], gpus: list[_Gpu]) -> list[MetricDemand]:
    """--replicas without --num-gpus: whole GPUs when they leave one for the other metrics, else an
    equal slice of the GPUs for those replicas and one replica of every other metric. A slice is
    never so thin that Ray could put more replicas on one GPU than its memory holds (Ray places by
    share only): two 26 GB replicas on a 40 GB GPU need a share above 0.5 each."""
    n_gpus = len(gpus)
    capacity = max((g.capacity_gb for g in gpus), default=0.0)
    out = []
    for d in demands:
        if d.replicas is not None and d.num_gpus is None:
            others = len(demands) - 1
            share = 1.0 if d.replicas <= n_gpus - (1 if others else 0) else _round_share(n_gpus / (d.replicas + others))
            per_gpu = max(1, int(capacity // d.memory_gb(d.batch_size or d.default_batch)))  # by memory
            if share * (per_gpu + 1) <= 1.0 + 1e-9:
                share = _round_share(1.0 / (per_gpu + 1)) + 1e-4  # the next 1e-4 step above 1 / (per_gpu + 1)
            d = dataclasses.replace(d, num_gpus=min(1.0, round(share, 4)))
        out.append(d)
    return out


def make_plan(shape: ClusterShape, demands: list[MetricDemand], *, device: str = "auto", cpu_layout: str = "fused",
              cpu_replicas: int | None = None) -> Plan:
    """The plan for ``demands`` on ``shape``.

    Raises:
        ConfigError: no plan fits (a model larger than any GPU, overrides beyond the cluster, a node
            without CPUs for its GPU actors, --device cuda without GPUs); the message says why.
    """
    nodes, gpus = _expand(shape.planned_nodes())
    cpus_total = sum(n.cpus for n in nodes)
    if device == "cuda" and not gpus:
        raise ConfigError("--device cuda requested but the Ray cluster has no GPUs.")
    _check_overrides(demands, shape, gpus if device != "cpu" else [])
    if not gpus or device == "cpu":
        return _cpu_plan(shape, demands, cpu_layout, cpu_replicas, cpus_total)
    _refuse_unplaceable(demands, gpus)
    demands = _share_for_replicas(demands, gpus)
    result = _fit_phase(demands, gpus)
    groups: list[tuple[list[MetricDemand], _Candidate, dict[str, int]]] = []
    if not isinstance(result, str):
        groups.append((demands, *result))
    else:  # phases: first fit, largest model first
        if any(d.num_gpus is not None for d in demands):
            raise ConfigError(f"The --num-gpus/--replicas settings cannot be placed: {result}. "
                              + _overrides_summary(demands, gpus))
        order = sorted(demands, key=lambda d: d.memory_gb(d.batch_size or d.default_batch), reverse=True)
        for d in order:
            for i, (members, _, _) in enumerate(groups):
                attempt = _fit_phase([*members, d], gpus)
                if not isinstance(attempt, str):
                    groups[i] = ([*members, d], *attempt)
                    break
            else:
                attempt = _fit_phase([d], gpus)
                if isinstance(attempt, str):
                    raise ConfigError(f"{d.metric} cannot be placed: {attempt}.")
                groups.append(([d], *attempt))
    warnings = []
    phases = []
    for members, cand, _batches in groups:
        order = [d.metric for d in demands if d in members]  # the run's metric order
        pools = {m: cand.pools[m] for m in order}
        rate = min(p.rate for p in pools.values())
        phases.append(Phase(pools=pools, gpu_memory_gb_per_gpu=cand.fullest, images_per_s=rate))
        if cand.unused:
            warnings.append(f"{cand.unused} GPU(s) stay idle in a phase with {', '.join(order)}")
    if len(phases) > 1:
        warnings.append(f"not every model fits the GPU memory at once: {len(phases)} phases run one after another")
    plan_rate = max(ph.images_per_s for ph in phases)
    cpus, decode_cpus, left, warning = _cpus_for_gpu_actors(phases, nodes, gpus, plan_rate)
    for ph in phases:
        for pool in ph.pools.values():
            pool.num_cpus = cpus
        ph.images_per_s = min(ph.images_per_s, max(decode_capacity(left), 0.05) * DECODE_IMAGES_PER_CPU_S)
    if warning:
        warnings.append(warning)
    decode = DecodePool(max_replicas=decode_actors(left), num_cpus=decode_cpus)
    return Plan(phases=phases, decode=decode, layout="gpu", gpus_total=len(gpus), cpus_total=cpus_total,
                autoscale=shape.can_autoscale, warnings=warnings)


def _cpu_plan(shape, demands, cpu_layout, cpu_replicas, cpus_total) -> Plan:
    """No GPUs (or --device cpu): fused actors (decode + every metric) or one pool per metric.
    Overrides this layout has no use for are named in the plan's warnings, not dropped silently."""
    per_image_s = sum(1.0 / d.images_per_s_cpu for d in demands)
    warnings = []
    if cpu_layout == "fused":
        per_metric = [d.metric for d in demands if d.replicas is not None]
        if per_metric:
            warnings.append(f"--replicas for {', '.join(per_metric)} ignored: the fused CPU actors run every "
                            "metric (--cpu-replicas N sets how many; --cpu-layout per-metric for one pool per metric)")
        demands = [dataclasses.replace(d, replicas=None) for d in demands]
    elif cpu_replicas:
        warnings.append("--cpu-replicas ignored: it sets the fused CPU actors, and this layout is per-metric "
                        "(--replicas METRIC=N sets a metric's pool)")
    if cpu_layout == "fused":
        replicas = cpu_replicas or max(1, int(cpus_total))
        if replicas > cpus_total:
            warnings.append(f"--cpu-replicas {replicas} > {cpus_total:g} CPU(s): more fused actors than cores, "
                            "each a process holding every model; they share the cores and add no speed")
        num_cpus = round(max(0.1, (cpus_total - 1.0) / replicas), 2)  # 1 CPU left for Ray Data's own tasks
        # the Ray reservation leaves a CPU free, but the actors compute on every core their torch
        # threads cover (stream._fused_stage: cpus // replicas threads each)
        cores = min(cpus_total, replicas * max(1, int(cpus_total // replicas)))
        rate = max(1.0, cores) / per_image_s
        pools = {d.metric: Pool(d.metric, replicas, 0.0, num_cpus, d.batch_size or CPU_BATCH_SIZE, 0.0, rate / replicas)
                 for d in demands}
        decode = DecodePool(max_replicas=0, num_cpus=0.0)
    else:
        # 1.5 CPUs stay free for decoding and Ray Data's own small tasks (projection, output)
        share = round(max(0.05, (cpus_total - 1.5) / max(1, len(demands))), 2)
        pools = {d.metric: Pool(d.metric, d.replicas or 1, 0.0, share, d.batch_size or CPU_BATCH_SIZE, 0.0,
                                d.images_per_s_cpu * share, dict(d.resources)) for d in demands}
        rate = min(p.rate for p in pools.values())
        decode = DecodePool(max_replicas=1, num_cpus=0.5)
    for d in demands:
        if d.replicas is not None and d.metric in pools:
            pools[d.metric].replicas = d.replicas
    phase = Phase(pools=pools, gpu_memory_gb_per_gpu=0.0, images_per_s=rate)
    return Plan(phases=[phase], decode=decode, layout=f"cpu-{cpu_layout}", gpus_total=shape.gpus_total,
                cpus_total=cpus_total, autoscale=shape.can_autoscale, warnings=warnings)


# ---------------------------------------------------------------------------------------------
# From the config and the scorer classes
# ---------------------------------------------------------------------------------------------
def default_batch(metric: str, on_gpu: bool) -> int:
    if not on_gpu:
        return CPU_BATCH_SIZE
    return DEFAULT_BATCH_SIZE.get(metric, SMALL_MODEL_BATCH_SIZE)


def demand_for(metric: str, options: dict[str, Any], *, dtype: str | None, on_gpu: bool, weights_root=None,
               batch_size=None, num_gpus=None, replicas=None, resources=None, measured=None) -> MetricDemand:
    """One metric's demand from its scorer class's cost ClassVars (and the measured table when given).

    weights_root: when the weight files exist there, their size gives the parameter count.
    """
    from pathlib import Path

    from janus_ray.metrics import get_scorer_class
    from janus_ray.metrics.costs import DTYPE_BYTES, ModelCost

    cls = get_scorer_class(metric)
    costs = getattr(cls, "costs_by_model", None)
    cost: ModelCost | None = costs.get(options.get("model"), cls.cost) if costs else cls.cost
    if cost is None:  # a scorer without metadata: planned as a small model
        cost = ModelCost(params=5e8, file_dtype="float32", activation_gb_per_image=0.05, gflops_per_image=300.0)
    compute_dtype = dtype or (cls.cuda_dtype if on_gpu else "float32")
    params = cost.params
    if weights_root is not None:
        sizes = []
        for item in cls.required_files(Path(weights_root), **options):
            found = item.resolve()
            if found is not None and found.suffix in (".bin", ".safetensors", ".pt", ".pth") and found.is_file():
                sizes.append(found.stat().st_size)
        if sizes:
            params = sum(sizes) / DTYPE_BYTES[cost.file_dtype]
    weights_gb = params * DTYPE_BYTES[compute_dtype] / 1e9
    act = cost.activation_gb_per_image * DTYPE_BYTES[compute_dtype] / DTYPE_BYTES.get(cls.cuda_dtype, 4)
    rate_gpu = EFFECTIVE_TFLOPS[compute_dtype] * 1e3 / cost.gflops_per_image
    rate_cpu = CPU_GFLOPS_PER_CORE / cost.gflops_per_image
    source = "estimate"
    row = measured.metrics.get(metric) if measured is not None else None
    if row is not None and row.dtype == compute_dtype and on_gpu:
        weights_gb, act, rate_gpu, source = row.weights_gb, row.activation_gb_per_image, row.images_per_s, "measured"
    return MetricDemand(
        metric=metric, weights_gb=weights_gb, activation_gb_per_image=act, images_per_s_gpu=rate_gpu,
        images_per_s_cpu=rate_cpu, dtype=compute_dtype, default_batch=default_batch(metric, on_gpu),
        batch_size=batch_size, num_gpus=num_gpus, replicas=replicas, resources=dict(resources or {}), source=source,
    )


def demands_from_config(config, shape: ClusterShape, *, use_weight_files: bool = True, measured=None) -> list[MetricDemand]:
    """MetricDemand per enabled metric of a validated RunConfig, on ``shape``."""
    on_gpu = shape.gpus_total > 0 and config.device != "cpu"
    if measured is None:  # the GPU-measured table when it exists; False: estimates only
        from janus_ray.metrics.costs import load_measured_costs

        measured = load_measured_costs()
    measured = measured or None
    root = config.weights_root if use_weight_files and config.weights_root else None
    out = []
    for metric in config.metrics:
        spec = config.spec(metric)
        out.append(demand_for(
            metric, dict(spec.options), dtype=getattr(spec, "dtype", None) or config.dtype, on_gpu=on_gpu, weights_root=root,
            batch_size=spec.batch_size, num_gpus=spec.num_gpus if on_gpu else None, replicas=spec.replicas,
            resources=spec.resources, measured=measured,
        ))
    return out


def plan_run(config, shape: ClusterShape, *, use_weight_files: bool = True, measured=None) -> Plan:
    """The plan for a validated RunConfig on ``shape`` (raises ConfigError when none fits)."""
    demands = demands_from_config(config, shape, use_weight_files=use_weight_files, measured=measured)
    plan = make_plan(shape, demands, device=config.device, cpu_layout=config.cpu_layout,
                     cpu_replicas=config.cpu_replicas)
    if plan.layout != "gpu":  # a GPU share asked for on CPU is dropped by demands_from_config: say so
        shares = [m for m in config.metrics if config.spec(m).num_gpus]
        if shares:
            plan.warnings.insert(0, f"--num-gpus for {', '.join(shares)} ignored: no GPU is used (CPU layout)")
    elif config.cpu_replicas:
        plan.warnings.append("--cpu-replicas ignored: GPUs are used (it sets the fused actors of CPU-only runs)")
    return plan


def shape_from_cluster_yaml(config: dict[str, Any], memory_gb: dict[str, float] | None = None,
                            every_gpu_gb: float | None = None) -> ClusterShape:
    """The shape a Ray cluster-launcher config declares: the head + min_workers of each type present,
    and every worker type (up to its max_workers) the autoscaler can add.

    memory_gb: GPU memory per node type name; every_gpu_gb (--gpu-memory-gb): one size for every
    other GPU node type; default: from the instance type (INSTANCE_GPU_MEMORY_GB). Raises
    ConfigError for a GPU node type none of them gives a size for.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"A Ray cluster-launcher config is a YAML mapping, got {type(config).__name__}.")
    missing = [key for key in ("available_node_types", "head_node_type") if key not in config]
    if missing:
        raise ConfigError(f"Not a Ray cluster-launcher config: no {' / '.join(missing)} "
                          "(see ray.io's cluster YAML: available_node_types, head_node_type, per type resources).")
    types = config["available_node_types"]
    head = config["head_node_type"]
    if not isinstance(types, dict) or head not in types:
        raise ConfigError(f"Cluster config: head_node_type {head!r} is not one of available_node_types "
                          f"({', '.join(map(str, types)) if isinstance(types, dict) else 'not a mapping'}).")

    def node(name: str, count: int) -> NodeShape:
        spec = types[name]
        if not isinstance(spec, dict):
            raise ConfigError(f"Cluster config: node type {name!r} is not a mapping.")
        res = dict(spec.get("resources", {}))
        gpus = int(res.pop("GPU", 0))
        cpus = float(res.pop("CPU", 1))
        mem = (memory_gb or {}).get(name, every_gpu_gb)
        if mem is None and gpus:
            instance = str(spec.get("node_config", {}).get("InstanceType", ""))
            mem = next((v for k, v in INSTANCE_GPU_MEMORY_GB.items() if instance.startswith(k)), None)
            if mem is None:
                raise ConfigError(f"Node type {name!r} ({instance}): unknown GPU memory; pass --gpu-memory-gb.")
        return NodeShape(gpus=gpus, gpu_memory_gb=mem or 0.0, cpus=cpus, resources=res, count=count, name=name)

    nodes = [node(head, 1)]
    addable = []
    for name, spec in types.items():
        if name == head:
            continue
        low, high = int(spec.get("min_workers", 0)), int(spec.get("max_workers", 0))
        if low:
            nodes.append(node(name, low))
        if high > low:
            addable.append(node(name, high - low))
    return ClusterShape(nodes=tuple(nodes), can_autoscale=bool(addable), node_types=tuple(addable))

"""The benchmark's timed phases. Each runs in a fresh child process:

    python -m benchmarks.phases SPEC.json

``SPEC.json`` says which phase, the inputs, the metrics and where to write the result JSON. The
parent (``benchmarks.runner``) measures the child's wall time and the peak memory of its
whole process tree; the child adds what only it can see.

* ``pipeline``: ``janus-ray eval`` (``janus_ray.cli.main``) in this fresh process, so it starts its
  own embedded Ray: cold start included. Probes go in through evaluate's seam (``pipeline.Stages``:
  ``progress`` and ``actors``, a ``janus_ray.stream.ActorClasses``; each probe subclasses and calls
  the real class): ``ProbeProgress`` records when each result batch reaches the driver, with the
  per-metric actor seconds (``_jr_sec_<metric>`` columns) it carries; ``ProbeMetricActor`` and
  ``ProbeDecodeStage`` record, inside each actor process, the load time, each batch's wall and CPU
  seconds and input bytes, the peak RSS and (on CUDA) ``torch.cuda.max_memory_allocated``;
  the fused stage (the CPU-only layout: decode and every metric in one actor) builds its
  in-process stages from those two, so each stage is measured in either layout.
* ``baseline``: what the earlier tool did, with janus_ray's scorers (same model math): for each
  folder, for each metric, load the model, then score each image alone (open, preprocess, score:
  ``scorer.score([path], [prompt])``).
* ``model_work``: each scorer's forward alone, on pixel tensors made beforehand, in batches of the
  pipeline's size, in the pipeline's row order (so text-feature caches hit as in the pipeline),
  after one untimed warm-up batch.
* ``loop`` (overhead mode): CPU-count processes, each loading the scorer once and scoring its share
  of the rows in batches; ``cached_rerun``: ``janus-ray eval`` again with every score in the resume
  cache; ``ray_floor``: what Ray alone costs for the pipeline's shape (no-op actors, no model).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()

PROBE_ENV = "JANUS_RAY_BENCH_PROBE_DIR"


# ----- helpers -----------------------------------------------------------------------------------
def _vm_hwm_bytes() -> int | None:
    """Peak resident set of this process (VmHWM), Linux; else getrusage."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    from benchmarks.procmem import peak_rss_self_bytes

    return peak_rss_self_bytes()


def _cuda_peak_mb(device: Any) -> float | None:
    import torch

    if getattr(device, "type", str(device)) != "cuda" or not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _cuda_now_mb(device: Any) -> float | None:
    import torch

    if getattr(device, "type", str(device)) != "cuda" or not torch.cuda.is_available():
        return None
    return round(torch.cuda.memory_allocated(device) / 2**20, 1)


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def _free(device: Any) -> None:
    import torch

    gc.collect()
    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _rows(spec: dict) -> list[tuple[str, str, str]]:
    """(folder, image path, prompt) of every scorable pair, in the pipeline's order."""
    from janus_ray.manifest import build_manifest, load_prompts

    prompts = load_prompts(spec["prompt_json"])
    scans = build_manifest(spec["folders"], prompts)
    rows = []
    for scan in scans:
        for row in scan.rows:
            if row.prompt is not None and not row.error:
                rows.append((scan.folder, str(row.image_path), row.prompt))
    return rows


# ----- probes for the pipeline phase -------------------------------------------------------------
def _numeric_bytes(batch: dict) -> int:
    """Bytes of the numeric arrays and ``bytes`` cells of a Ray Data batch (the pixels dominate)."""
    from benchmarks.transport import batch_bytes

    return batch_bytes(batch)


class _StageProbe:
    """Per-batch wall/CPU seconds and input bytes of one Ray Data stage, written to the probe folder."""

    def __init__(self, stage: str, started: float):
        self.record = {"stage": stage, "pid": os.getpid(), "started_at": started, "loaded_at": time.time(),
                       "load_s": time.time() - started, "batches": []}
        self.path = Path(os.environ.get(PROBE_ENV, ".")) / f"{stage}-{os.getpid()}.json"

    def call(self, fn, batch: dict, device: Any = None):
        n = len(batch["image_path"])
        in_bytes = _numeric_bytes(batch)
        wall, cpu = time.time(), time.process_time()
        out = fn(batch)
        self.record["batches"].append([wall, time.time(), n, time.process_time() - cpu, in_bytes])
        self.write(device)
        return out

    def write(self, device: Any = None) -> None:
        self.record["peak_rss_mb"] = round((_vm_hwm_bytes() or 0) / 2**20, 1)
        self.record["process_cpu_s"] = time.process_time()  # whole process: imports, load, Ray's data handling
        if device is not None:
            if not self.record["batches"]:
                self.record["cuda_weights_mb"] = _cuda_now_mb(device)
            self.record["cuda_peak_mb"] = _cuda_peak_mb(device)
        try:
            self.path.write_text(json.dumps(self.record), encoding="utf-8")
        except OSError:
            pass


def _probe_classes():
    from janus_ray.actors.decode_stage import DecodeStage
    from janus_ray.actors.metric_actor import MetricActor, time_column
    from janus_ray.columns import pixel_key_column
    from janus_ray.pipeline import Progress

    class ProbeProgress(Progress):
        """Progress that also records when each result batch reaches the driver, and its actor seconds."""

        instances: list = []

        def __init__(self, plans, totals, stream=sys.stderr):
            super().__init__(plans, totals, stream)
            self.created = time.perf_counter()
            self.arrivals: list[tuple[float, int]] = []
            self.actor_seconds = {p.metric: 0.0 for p in plans}
            ProbeProgress.instances.append(self)

        def update(self, batch, todo_rows) -> None:
            self.arrivals.append((time.perf_counter(), len(batch)))
            for plan in self.plans:
                column = time_column(plan.metric)
                if column in batch:  # per-row share of the batch's seconds: the sum is the batch time
                    self.actor_seconds[plan.metric] += float(batch[column].fillna(0).sum())
            super().update(batch, todo_rows)

    class ProbeMetricActor(MetricActor):
        """MetricActor recording its load time, per-batch wall/CPU seconds, input bytes and memory peaks."""

        def __init__(self, **kwargs):
            started = time.time()
            super().__init__(**kwargs)
            self._probe = _StageProbe(kwargs["metric"], started)
            self._probe.write(self.scorer.device)

        def __call__(self, batch):
            self._fetched = 0
            out = self._probe.call(super().__call__, batch, self.scorer.device)
            if self._fetched:  # pixels read from the pixel store count as input, like pixels in the rows
                self._probe.record["batches"][-1][4] += self._fetched
                self._probe.write(self.scorer.device)
            return out

        def _with_stored_pixels(self, batch, rows, errors):
            local = super()._with_stored_pixels(batch, rows, errors)
            if local is not batch:  # the pixel cells it filled in (uint8 slices of the store's objects)
                for column, cells in local.items():
                    if cells is not batch.get(column) and cells.dtype == object:
                        self._fetched += sum(len(c) for c in cells) - sum(len(c) for c in batch[column])
            return local

    class ProbeDecodeStage(DecodeStage):
        """DecodeStage recording per-batch wall/CPU seconds and the bytes it produces."""

        def __init__(self, **kwargs):
            started = time.time()
            super().__init__(**kwargs)
            self._probe = _StageProbe("_decode", started)
            self._probe.write()

        def __call__(self, batch):
            self._sent = 0
            out = self._probe.call(super().__call__, batch)
            self._probe.record["batches"][-1][4] = _numeric_bytes(out) + self._sent  # bytes it produced
            self._probe.write()
            return out

        def _to_store(self, out, metrics, n):
            self._sent = sum(len(cell) for metric in metrics for cell in self._payload[metric])
            super()._to_store(out, metrics, n)
            if not n or not out[pixel_key_column()][0]:  # the store did not take them: they stayed in the rows
                self._sent = 0

    return ProbeProgress, ProbeMetricActor, ProbeDecodeStage


def _stage_summary(records: list[dict]) -> dict:
    batches = [b for r in records for b in r["batches"]]
    return {
        "actors": len(records),
        "load_s": max((r["load_s"] for r in records), default=None),
        "batches": len(batches),
        "rows": sum(b[2] for b in batches),
        "busy_s": sum(b[1] - b[0] for b in batches),
        "cpu_s": sum(b[3] for b in batches),
        # CPU of the actor processes outside the stage's calls: start-up, imports, model load and Ray
        # Data's own work (reading input blocks, building output blocks)
        "process_cpu_s": (None if any(r.get("process_cpu_s") is None for r in records)
                          else sum(r["process_cpu_s"] for r in records)),
        "mb_in": round(sum(b[4] for b in batches) / 2**20, 1),
        "peak_rss_mb": max((r.get("peak_rss_mb") or 0 for r in records), default=None),
        "cuda_peak_mb": max((r["cuda_peak_mb"] for r in records if r.get("cuda_peak_mb") is not None), default=None),
        "cuda_weights_mb": max((r["cuda_weights_mb"] for r in records if r.get("cuda_weights_mb") is not None), default=None),
    }


def run_pipeline(spec: dict) -> dict:
    import janus_ray.cli as cli
    import janus_ray.pipeline as pipeline

    imported = time.perf_counter()
    probe_progress, probe_actor, probe_decode = _probe_classes()
    from janus_ray.stream import ActorClasses

    seam = pipeline.Stages(progress=probe_progress,
                           actors=ActorClasses(decode=probe_decode, metric=probe_actor))
    eval_started, eval_wall = time.perf_counter(), time.time()
    config = cli.config_from_args(cli.build_parser().parse_args(spec["cli_argv"]))  # what `janus-ray eval` runs
    result = pipeline.evaluate(config, stages=seam)
    code = 1 if (config.strict and result.n_failed) else 0
    eval_done = time.perf_counter()
    if code != 0:
        raise SystemExit(f"janus-ray eval exited with {code}")
    progress = probe_progress.instances[-1]
    arrivals = progress.arrivals
    rows_total = sum(n for _, n in arrivals)
    records: dict[str, list] = {}
    for path in Path(os.environ[PROBE_ENV]).glob("*.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        records.setdefault(record["stage"], []).append(record)
    chain = [p.metric for p in progress.plans]  # the metric stages run chained, in this order
    # Whole-process CPU per actor process (stages fused into one process share it: counted once).
    process_cpu = {r["pid"]: r.get("process_cpu_s", 0.0) for rs in records.values() for r in rs}
    shared = {pid for pid in process_cpu if sum(r["pid"] == pid for rs in records.values() for r in rs) > 1}
    for rs in records.values():
        for r in rs:
            if r["pid"] in shared:
                r["process_cpu_s"] = None
    stages = {"_decode": _stage_summary(records.get("_decode", [])),
              **{m: _stage_summary(records.get(m, [])) for m in chain}}
    # Steady state: from the moment every metric had one loaded actor to the last batch of any stage
    # (a later replica that loads while the others already score is extra capacity, not start-up).
    metric_records = [r for m in chain for r in records.get(m, [])]
    all_loaded = max(min(r["loaded_at"] for r in records.get(m, [])) for m in chain)
    last_end = max(b[1] for r in metric_records for b in r["batches"])
    last_stage_rows = sum(b[2] for r in records.get(chain[-1], []) for b in r["batches"] if b[1] > all_loaded)
    steady_s = last_end - all_loaded
    per_metric = {}
    for metric in chain:
        stage = stages[metric]
        per_metric[metric] = {
            **stage,
            "actor_busy_s": progress.actor_seconds[metric],  # from the _jr_sec_<metric> column
            "images_per_s": rows_total / progress.actor_seconds[metric] if progress.actor_seconds[metric] else None,
            "actor_peak_rss_mb": stage["peak_rss_mb"],
        }
    # The end of the run: how long the first actor to run out of work waited for the last one
    # (blocks are handed out whole: the tail is up to a few blocks of one actor's work).
    ends = {}
    for r in metric_records:
        if r["batches"]:
            ends[r["pid"]] = max(ends.get(r["pid"], 0.0), max(b[1] for b in r["batches"]))
    tail_idle_s = max(ends.values()) - min(ends.values()) if len(ends) > 1 else 0.0
    first_t, last_t = arrivals[0][0], arrivals[-1][0]
    return {
        "images": rows_total,
        "import_s": imported - STARTED,
        "evaluate_s": eval_done - eval_started,
        "until_stream_s": progress.created - eval_started,  # manifest + hashing + Ray start + planning
        "all_models_loaded_s": all_loaded - eval_wall,  # ... + actor processes started and every model loaded
        "scoring_done_s": last_end - eval_wall,
        "steady_s": steady_s,
        "steady_images_per_s": last_stage_rows / steady_s if steady_s > 0 else None,
        "driver_first_result_s": first_t - eval_started,  # when results start reaching the driver
        "driver_last_result_s": last_t - eval_started,
        "write_s": eval_done - last_t,  # assembling and writing the result files (+ summary, report)
        "result_batches": len(arrivals),
        "tail_idle_s": tail_idle_s,
        "chain": chain,
        "actor_processes": len(process_cpu),
        "actor_processes_cpu_s": sum(process_cpu.values()),
        "layout": "fused" if any(r["pid"] == d["pid"] for d in records.get("_decode", []) for r in metric_records)
        else "per-metric",
        "decode": stages["_decode"],
        "per_metric": per_metric,
    }


# ----- baseline ---------------------------------------------------------------------------------
def run_baseline(spec: dict) -> dict:
    import csv

    import torch

    from janus_ray.metrics import load_scorer

    imported = time.perf_counter()
    rows = _rows(spec)
    by_folder: dict[str, list[tuple[str, str]]] = {}
    for folder, path, prompt in rows:
        by_folder.setdefault(folder, []).append((path, prompt))
    per_metric = {m["scorer"]: {"load_s": 0.0, "score_s": 0.0, "images": 0, "cuda_peak_mb": None} for m in spec["metrics"]}
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder, pairs in by_folder.items():
        scores: dict[str, list[float]] = {}
        for metric in spec["metrics"]:
            stats = per_metric[metric["scorer"]]
            started = time.perf_counter()
            scorer = load_scorer(metric["scorer"], spec["weights_root"], device=spec["device"], dtype=spec["dtype"],
                                 **metric["options"])
            loaded = time.perf_counter()
            values = []
            for path, prompt in pairs:  # one image at a time: open, preprocess, score
                values.append(scorer.score([path], [prompt])[0])
            _sync(scorer.device)
            done = time.perf_counter()
            stats["load_s"] += loaded - started
            stats["score_s"] += done - loaded
            stats["images"] += len(pairs)
            peak = _cuda_peak_mb(scorer.device)
            if peak is not None:
                stats["cuda_peak_mb"] = max(stats["cuda_peak_mb"] or 0, peak)
            scores[metric["scorer"]] = values
            device = scorer.device
            del scorer
            _free(device)
        # The earlier tool wrote one CSV per folder.
        with (out_dir / f"{Path(folder).name}.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image_path", "prompt", *scores])
            for i, (path, prompt) in enumerate(pairs):
                writer.writerow([path, prompt, *(scores[m][i] for m in scores)])
    for stats in per_metric.values():
        stats["images_per_s"] = stats["images"] / stats["score_s"] if stats["score_s"] else None
        stats["images_per_s_with_load"] = stats["images"] / (stats["score_s"] + stats["load_s"])
    return {"images": len(rows), "import_s": imported - STARTED, "torch_threads": torch.get_num_threads(),
            "run_s": time.perf_counter() - imported, "per_metric": per_metric,
            "peak_rss_self_mb": round((_vm_hwm_bytes() or 0) / 2**20, 1)}


# ----- model work -------------------------------------------------------------------------------
def run_model_work(spec: dict) -> dict:
    import torch

    from janus_ray.metrics import load_scorer

    rows = _rows(spec)
    per_metric = {}
    for metric in spec["metrics"]:
        batch_size = metric["batch_size"]
        started = time.perf_counter()
        scorer = load_scorer(metric["scorer"], spec["weights_root"], device=spec["device"], dtype=spec["dtype"],
                             **metric["options"])
        load_s = time.perf_counter() - started
        weights_mb = _cuda_now_mb(scorer.device)
        # Pixel tensors made beforehand (pixel values do not change the work): one pool of a batch.
        pool = scorer.preprocess([path for _, path, _ in rows[:batch_size]])
        warm = min(batch_size, len(pool))
        scorer.score_pixels(pool[:warm], [f"warm-up prompt number {i}" for i in range(warm)])
        _sync(scorer.device)
        started = time.perf_counter()
        for start in range(0, len(rows), batch_size):
            prompts = [prompt for _, _, prompt in rows[start : start + batch_size]]
            chunk = pool[: len(prompts)] if len(prompts) <= len(pool) else pool[torch.arange(len(prompts)) % len(pool)]
            scorer.score_pixels(chunk, prompts)
        _sync(scorer.device)
        forward_s = time.perf_counter() - started
        per_metric[metric["scorer"]] = {
            "forward_s": forward_s,
            "images": len(rows),
            "batch_size": batch_size,
            "images_per_s": len(rows) / forward_s if forward_s else None,
            "load_s": load_s,
            "cuda_weights_mb": weights_mb,
            "cuda_peak_mb": _cuda_peak_mb(scorer.device),
        }
        device = scorer.device
        del scorer, pool
        _free(device)
    return {"images": len(rows), "torch_threads": torch.get_num_threads(), "per_metric": per_metric,
            "total_s": sum(m["forward_s"] for m in per_metric.values()),
            "peak_rss_self_mb": round((_vm_hwm_bytes() or 0) / 2**20, 1)}


# ----- overhead mode: a plain batched loop, and a fully cached rerun --------------------------------
def _loop_worker(args: tuple) -> dict:
    """One loop process: load the scorer once, score its share of the rows in batches."""
    spec, shard, threads = args
    import torch

    torch.set_num_threads(threads)
    from janus_ray.metrics import load_scorer

    started = time.perf_counter()
    metric = spec["metrics"][0]
    scorer = load_scorer(metric["scorer"], spec["weights_root"], device=spec["device"], dtype=spec["dtype"],
                         **metric["options"])
    loaded = time.perf_counter()
    batch = metric["batch_size"]  # the pipeline's batch size (overhead mode: 64)
    scored = 0
    for start in range(0, len(shard), batch):
        chunk = shard[start : start + batch]
        scorer.score([path for path, _ in chunk], [prompt for _, prompt in chunk])
        scored += len(chunk)
    return {"load_s": loaded - started, "score_s": time.perf_counter() - loaded, "images": scored}


def run_loop(spec: dict) -> dict:
    """CPU-count processes, each ``load_scorer`` once and ``score(paths, prompts)`` on batches of
    the pipeline's batch size (overhead mode: 64) over a contiguous share of the rows: the plain
    loop the pipeline's overhead is measured against."""
    import multiprocessing

    rows = [(path, prompt) for _, path, prompt in _rows(spec)]
    processes = spec.get("loop_processes") or os.cpu_count() or 1
    threads = max(1, (os.cpu_count() or 1) // processes)
    size = -(-len(rows) // processes)
    shards = [rows[i : i + size] for i in range(0, len(rows), size)]
    with multiprocessing.get_context("spawn").Pool(len(shards)) as pool:
        workers = pool.map(_loop_worker, [(spec, shard, threads) for shard in shards])
    metric = spec["metrics"][0]["scorer"]
    return {"images": sum(w["images"] for w in workers), "processes": len(shards), "torch_threads": threads,
            "per_metric": {metric: {"load_s": max(w["load_s"] for w in workers),
                                    "score_s": max(w["score_s"] for w in workers)}}}


class NoOpStage:
    """Ray Data UDF for ``ray_floor``: one zero score per row, nothing imported, loaded or read."""

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        return {"row_id": batch["row_id"], "score": np.zeros(len(batch["row_id"]))}


def run_ray_floor(spec: dict) -> dict:
    """Ray's own cost for the pipeline's shape, without janus-ray's work: the embedded start as
    ``janus-ray eval`` does it (``stream.connect``: ``ray.init``, Ray Data's helper actors; Ray
    Data imported beside ``ray.init``), the same rows in the same blocks (``table.input_blocks``)
    through a pool of no-op actors sized as the fused CPU pool is (``stream.fused_replicas``,
    ``fused_actor_cpus``, ``pool_start_wait_s``), the driver iterating the result batches as pandas
    frames, and the shutdown (``stream.disconnect``). No torch, no model, no image read, no result
    file. ``ray_s``: from before ``import ray`` to after the shutdown (the folder scan that gives
    the rows is done first, untimed)."""
    import threading
    from types import SimpleNamespace

    import pandas as pd

    from janus_ray.config import RunConfig
    from janus_ray.table import input_blocks

    rows = _rows(spec)
    frame = pd.DataFrame({"row_id": range(len(rows)), "image_path": [r[1] for r in rows],
                          "prompt": [r[2] for r in rows]})
    batch = max(m["batch_size"] for m in spec["metrics"])
    blocks = input_blocks(frame, [SimpleNamespace(batch_size=batch)], RunConfig.decode_batch_size)
    started = time.perf_counter()
    import ray

    from janus_ray import pipeline, stream

    importing = threading.Thread(target=pipeline.import_ray_data)  # as prepare_while_ray_starts does
    importing.start()
    stream.connect(None)
    importing.join()
    connected = time.perf_counter()
    cpus = ray.cluster_resources().get("CPU", 1.0)
    replicas = stream.fused_replicas(SimpleNamespace(cpu_replicas=None), cpus)
    ray.data.DataContext.get_current().wait_for_min_actors_s = stream.pool_start_wait_s(True, 1, 600.0)
    ds = ray.data.from_blocks(blocks).map_batches(
        NoOpStage, batch_size=batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=replicas),
        num_cpus=stream.fused_actor_cpus(cpus, replicas))
    seen = first = 0
    for out in ds.iter_batches(batch_format="pandas", batch_size=None):
        first = first or time.perf_counter()
        seen += len(out)
    streamed = time.perf_counter()
    stream.disconnect()
    done = time.perf_counter()
    if seen != len(frame):
        raise SystemExit(f"ray_floor: {seen} rows came back of {len(frame)}")
    return {"images": seen, "ray_s": done - started, "start_s": connected - started,
            "first_result_s": first - started, "stream_s": streamed - connected, "shutdown_s": done - streamed,
            "replicas": replicas, "blocks": len(blocks), "per_metric": {}}


def run_cli(spec: dict) -> dict:
    """``janus-ray eval`` as given (the fully cached rerun), timed, with its resume-cache hits."""
    import contextlib
    import io

    import janus_ray.cli as cli

    imported = time.perf_counter()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(spec["cli_argv"])
    done = time.perf_counter()
    text = err.getvalue()
    sys.stderr.write(text)
    if code != 0:
        raise SystemExit(f"janus-ray eval exited with {code}")
    hits = int(text.split("resume cache hits: ")[1].split()[0]) if "resume cache hits: " in text else None
    to_score = int(text.split(" to score")[0].rsplit(" ", 1)[1]) if " to score" in text else None
    return {"images": hits or 0, "import_s": imported - STARTED, "evaluate_s": done - imported,
            "cache_hits": hits, "to_score": to_score, "per_metric": {}}


PHASES = {"pipeline": run_pipeline, "baseline": run_baseline, "model_work": run_model_work, "loop": run_loop,
          "cached_rerun": run_cli, "ray_floor": run_ray_floor}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    threads = spec.get("torch_threads")
    if threads and spec["phase"] != "pipeline":
        import torch

        torch.set_num_threads(threads)
    result = PHASES[spec["phase"]](spec)
    result["child_s"] = time.perf_counter() - STARTED
    Path(spec["result"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    from janus_ray.quick_exit import end_at_exit

    # every phase's process ends as `janus-ray` does (janus_ray.cli.run): its exit code, no interpreter teardown
    set_code = end_at_exit()
    code = main()
    set_code(code)
    sys.exit(code)

"""Bytes per image through Ray's object store in the per-metric layout, two ways.

``measure``: the real DecodeStage and MetricActor chain run in-process, no Ray. Each stage's output
batch becomes a block in the object store when the stages run in separate actor pools; its size is
the numeric arrays plus the ``bytes`` cells (the uint8 pixels). With ``store`` (the pixel store's
in-process stand-in) the pixels leave the rows: they are put once (``put_bytes``) and the blocks
carry keys.

``measure_ray`` (``python -m benchmarks.transport``, a child process of the bench): the real
per-metric pipeline (``evaluate``, cpu_layout per-metric) on an embedded local Ray, once with the
pixels in the rows (``pixel_store=False``, the layout before the pixel store) and once through
the store; each run's bytes = plasma's cumulative created bytes after minus before (every object
written to the object store: input blocks, each stage's output blocks, the store's pixels, results).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def batch_bytes(batch: dict) -> int:
    """Numeric array bytes + ``bytes`` cell lengths of a numpy-format batch (text columns ignored)."""
    total = 0
    for values in batch.values():
        if not isinstance(values, np.ndarray):
            continue
        if values.dtype != object:
            total += values.nbytes
        else:
            total += sum(len(v) for v in values if isinstance(v, (bytes, bytearray)))
    return int(total)


def measure(image_paths: list[str], prompts: list[str], metrics: list[str], weights_root: Path,
            batch_size: int = 16, store: Any = None) -> dict[str, Any]:
    """Run decode + every metric's stage on the images; bytes per image leaving each stage (and,
    with ``store``, put into the store)."""
    from janus_ray.actors.decode_stage import DecodeStage, todo_column
    from janus_ray.actors.metric_actor import MetricActor

    spec = {m: {"scorer": m, "weights_root": str(weights_root), "options": {}} for m in metrics}
    decode = DecodeStage(spec, max_pixels=None, pixel_store=store)
    actors = [MetricActor(metric=m, scorer=m, weights_root=str(weights_root), device="cpu", dtype=None, options={},
                          pixel_store=store, report_done=k == len(metrics) - 1)
              for k, m in enumerate(metrics)]
    out_bytes = {"decode": 0, **{m: 0 for m in metrics}}
    n = len(image_paths)
    for start in range(0, n, batch_size):
        paths = image_paths[start : start + batch_size]
        k = len(paths)
        batch = {
            "row_id": np.arange(start, start + k), "image_path": np.array(paths, dtype=object),
            "prompt": np.array(prompts[start : start + k], dtype=object), "has_prompt": np.ones(k, bool),
            "decode_error": np.array([""] * k, dtype=object), **{todo_column(m): np.ones(k, bool) for m in metrics},
        }
        batch = decode(batch)
        out_bytes["decode"] += batch_bytes(batch)
        for metric, actor in zip(metrics, actors):
            batch = actor(batch)
            out_bytes[metric] += batch_bytes(batch)
    per_stage = {stage: b / n for stage, b in out_bytes.items()}
    # every stage output but the last crosses to the next stage (the last is projected away)
    between = sum(per_stage[s] for s in ["decode", *metrics[:-1]])
    put = store.put_bytes / n if store is not None else 0.0
    return {
        "images": n,
        "metrics": metrics,
        "pixel_store": store is not None,
        "bytes_per_image_by_stage_output": per_stage,
        "bytes_per_image_between_stages": between,
        "bytes_per_image_put_in_store": put,
        "bytes_per_image_through_object_store": between + put,
        "pixel_bytes_per_image_from_decode": per_stage["decode"] if store is None else put,
        "store_keys_left": None if store is None else store.ledger.summary()["held_keys"],
    }


def measure_ray(folders: list[str], prompt_json: str, metrics: list[dict], weights_root: str, work: Path,
                decode_batch_size: int = 16) -> dict[str, Any]:
    """Plasma bytes per image of the per-metric pipeline, without and with the pixel store."""
    import ray

    from janus_ray.actors.pixel_store import created_bytes
    from janus_ray.config import MetricSpec, RunConfig
    from janus_ray.pipeline import evaluate

    from benchmarks.procmem import TreeSampler

    runs = {}
    for label, enabled in (("without_store", False), ("with_store", True)):
        # a fresh Ray per run, so that the CPU seconds of its process tree are this run's alone
        sampler = TreeSampler(os.getpid(), interval=0.5).start()
        root_cpu = sum(os.times()[:2])
        ray.init(address="local", include_dashboard=False, configure_logging=False)
        try:
            config = RunConfig(
                folders=list(folders), weights_root=weights_root, prompt_json=prompt_json,
                metrics=[m["name"] for m in metrics],
                metric_specs={m["name"]: MetricSpec(batch_size=m["batch_size"]) for m in metrics},
                output_dir=str(work / label / "results"), cache_dir=str(work / label / "cache"), resume=False,
                device="cpu", decode_batch_size=decode_batch_size, cpu_layout="per-metric", pixel_store=enabled,
            )
            before, started = created_bytes(), time.perf_counter()
            result = evaluate(config, io.StringIO())
            created = created_bytes() - before
            runs[label] = {"images": result.n_rows, "created_bytes": created,
                           "bytes_per_image": created / max(1, result.n_rows),
                           "wall_s": time.perf_counter() - started,
                           "store": result.pixel_stores[0] if len(result.pixel_stores) == 1 else None}
        finally:
            ray.shutdown()
        tree = sampler.stop()
        # CPU seconds of Ray's processes and this one during the run (sampled: a process's last
        # half second is missed); the difference between the two runs is the store's CPU cost
        runs[label]["tree_cpu_s"] = round((tree["tree_cpu_s"] or 0.0) - root_cpu, 1)
        runs[label]["cpu_s_by_process"] = tree["cpu_s_by_process"]
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transport")
    parser.add_argument("--spec", required=True, help="JSON: folders, prompt_json, metrics, weights_root")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    runs = measure_ray(spec["folders"], spec["prompt_json"], spec["metrics"], spec["weights_root"], Path(args.work_dir))
    Path(args.out).write_text(json.dumps(runs), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

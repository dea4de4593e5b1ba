"""Bytes per image between the pipeline's stages (what the per-metric layout writes to Ray's
object store): the real DecodeStage and MetricActor chain run in-process, no Ray.

Each stage's output batch becomes a block in the object store when the stages run in separate
actor pools; its size is the numeric arrays plus the ``bytes`` cells (the uint8 pixels).
"""

from __future__ import annotations

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
            batch_size: int = 16) -> dict[str, Any]:
    """Run decode + every metric's stage on the images; bytes per image leaving each stage."""
    from janus_ray.actors.decode_stage import DecodeStage, todo_column
    from janus_ray.actors.metric_actor import MetricActor

    spec = {m: {"scorer": m, "weights_root": str(weights_root), "options": {}} for m in metrics}
    decode = DecodeStage(spec, max_pixels=None)
    actors = [MetricActor(metric=m, scorer=m, weights_root=str(weights_root), device="cpu", dtype=None, options={})
              for m in metrics]
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
    return {
        "images": n,
        "metrics": metrics,
        "bytes_per_image_by_stage_output": per_stage,
        # every stage output but the last crosses to the next stage (the last is projected away)
        "bytes_per_image_between_stages": sum(per_stage[s] for s in ["decode", *metrics[:-1]]),
        "pixel_bytes_per_image_from_decode": per_stage["decode"],
    }

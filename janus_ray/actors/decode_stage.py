"""CPU stage: open each image once and produce every enabled metric's pixel tensor from it."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from janus_ray.images import open_image
from janus_ray.metrics import get_scorer_class


def pixel_column(metric: str) -> str:
    return f"_jr_px_{metric}"


def stage_error_column(metric: str) -> str:
    return f"_jr_err_{metric}"


def todo_column(metric: str) -> str:
    return f"_jr_todo_{metric}"


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DecodeStage:
    """Ray Data UDF: ``image_path`` -> ``_jr_px_<metric>`` (float32 CHW) for each enabled metric.

    Each image is decoded exactly once; each metric's transform reproduces its reference's
    preprocessing from the original-mode image. Failures become per-row error strings.
    """

    def __init__(self, metrics: dict[str, dict[str, Any]], max_pixels: int | None):
        # metrics: {metric: {"scorer": name, "weights_root": str, "options": {...}}}
        self.max_pixels = max_pixels
        self.transforms = {
            metric: get_scorer_class(spec["scorer"]).build_image_transform(Path(spec["weights_root"]), **spec["options"])
            for metric, spec in metrics.items()
        }
        self.shapes: dict[str, tuple[int, ...]] = {}
        # Metrics whose transforms are identical (HPSv2 and HPSv2.1 share one) compute it once.
        self.same_as: dict[str, str] = {}
        first_by_bytes: dict[bytes, str] = {}
        for metric, transform in self.transforms.items():
            try:
                key = pickle.dumps(transform)
            except Exception:  # noqa: BLE001 - an unpicklable transform is simply not shared
                continue
            self.same_as[metric] = first_by_bytes.setdefault(key, metric)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image_path"])
        decode_errors = list(batch["decode_error"])
        pixels: dict[str, list[np.ndarray | None]] = {m: [None] * n for m in self.transforms}
        errors: dict[str, list[str]] = {m: [""] * n for m in self.transforms}
        for i in range(n):
            wanted = [m for m in self.transforms if batch[todo_column(m)][i]]
            if decode_errors[i] or not wanted:
                continue
            try:
                image = open_image(str(batch["image_path"][i]), max_pixels=self.max_pixels)
            except Exception as exc:  # noqa: BLE001 - any unreadable file costs its row only
                decode_errors[i] = f"unreadable image: {describe_error(exc)}"
                continue
            done: dict[str, np.ndarray] = {}
            for metric in wanted:
                source = self.same_as.get(metric, metric)
                try:
                    if source not in done:
                        done[source] = np.ascontiguousarray(self.transforms[source](image), dtype=np.float32)
                    self.shapes[metric] = done[source].shape
                    pixels[metric][i] = done[source]
                except Exception as exc:  # noqa: BLE001
                    errors[metric][i] = f"preprocessing failed: {describe_error(exc)}"
        out = dict(batch)
        out["decode_error"] = np.array(decode_errors, dtype=object)
        for metric in self.transforms:
            out[pixel_column(metric)] = self._stack(metric, pixels[metric])
            out[stage_error_column(metric)] = np.array(errors[metric], dtype=object)
        return out

    def _stack(self, metric: str, arrays: list[np.ndarray | None]) -> np.ndarray:
        """Stack into one tensor column; rows without pixels get a 1-element placeholder shape."""
        shape = next((a.shape for a in arrays if a is not None), self.shapes.get(metric))
        if shape is None:  # nothing decoded in this batch: a tiny placeholder keeps the column typed
            shape = (1,)
        filler = np.zeros(shape, dtype=np.float32)
        return np.stack([a if a is not None else filler for a in arrays])

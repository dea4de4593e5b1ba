"""CPU stage: open each image once and produce every enabled metric's pixel tensor from it."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from janus_ray.images import open_image
from janus_ray.metrics import get_scorer_class


def pixel_column(metric: str) -> str:
    """uint8 pixels of ``metric``'s ``to_uint8``, one ``bytes`` per row (b'' = none or shared)."""
    return f"_jr_px_{metric}"


def shape_column(metric: str) -> str:
    """(C, H, W) of each row's pixels in ``pixel_column(metric)`` (int64, zeros when none)."""
    return f"_jr_pxshape_{metric}"


def source_column(metric: str) -> str:
    """Per row, the metric whose pixel column holds this metric's pixels ('' = its own)."""
    return f"_jr_pxsrc_{metric}"


def pending_column(metric: str) -> str:
    """Per row: this metric's stage has not run yet (its pixels, or its source's, are still needed)."""
    return f"_jr_pxpending_{metric}"


def stage_error_column(metric: str) -> str:
    return f"_jr_err_{metric}"


def todo_column(metric: str) -> str:
    return f"_jr_todo_{metric}"


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DecodeStage:
    """Ray Data UDF: ``image_path`` -> each enabled metric's uint8 pixels at model resolution.

    Each image is decoded exactly once; each metric's ``to_uint8`` (``PixelTransform``) reproduces
    its reference's resize / crop from the original-mode image; rescale and normalise run in the
    metric actor. Pixels equal to an earlier metric's for the same row (HPSv2 / HPSv2.1 always;
    VQAScore and CLIPScore for square images; often the 224 px metrics) are shipped once: the
    later metric's ``source_column`` names the holder. Per row and metric the columns are
    ``pixel_column`` (bytes), ``shape_column``, ``source_column``, ``pending_column`` and
    ``stage_error_column``. Failures become per-row error strings.
    """

    def __init__(self, metrics: dict[str, dict[str, Any]], max_pixels: int | None):
        # metrics: {metric: {"scorer": name, "weights_root": str, "options": {...}}}
        self.max_pixels = max_pixels
        self.transforms = {
            metric: get_scorer_class(spec["scorer"]).build_image_transform(Path(spec["weights_root"]), **spec["options"])
            for metric, spec in metrics.items()
        }
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
        metrics = list(self.transforms)
        payload: dict[str, list[bytes]] = {m: [b""] * n for m in metrics}
        shapes = {m: np.zeros((n, 3), dtype=np.int64) for m in metrics}
        sources: dict[str, list[str]] = {m: [""] * n for m in metrics}
        errors: dict[str, list[str]] = {m: [""] * n for m in metrics}
        for i in range(n):
            wanted = [m for m in metrics if batch[todo_column(m)][i]]
            if decode_errors[i] or not wanted:
                continue
            try:
                image = open_image(str(batch["image_path"][i]), max_pixels=self.max_pixels)
            except Exception as exc:  # noqa: BLE001 - any unreadable file costs its row only
                decode_errors[i] = f"unreadable image: {describe_error(exc)}"
                continue
            done: dict[str, np.ndarray] = {}  # transform owner -> its pixels
            shipped: list[tuple[str, np.ndarray]] = []  # (metric holding them, pixels)
            for metric in wanted:
                owner = self.same_as.get(metric, metric)
                try:
                    if owner not in done:
                        done[owner] = np.ascontiguousarray(self.transforms[owner].to_uint8(image), dtype=np.uint8)
                    pixels = done[owner]
                except Exception as exc:  # noqa: BLE001
                    errors[metric][i] = f"preprocessing failed: {describe_error(exc)}"
                    continue
                holder = next((m for m, px in shipped if px.shape == pixels.shape and np.array_equal(px, pixels)), None)
                if holder is None:
                    payload[metric][i] = pixels.tobytes()
                    shapes[metric][i] = pixels.shape
                    shipped.append((metric, pixels))
                else:
                    sources[metric][i] = holder
        out = dict(batch)
        out["decode_error"] = np.array(decode_errors, dtype=object)
        for metric in metrics:
            out[pixel_column(metric)] = _bytes_column(payload[metric])
            out[shape_column(metric)] = shapes[metric]
            out[source_column(metric)] = np.array(sources[metric], dtype=object)
            out[pending_column(metric)] = np.ones(n, dtype=bool)
            out[stage_error_column(metric)] = np.array(errors[metric], dtype=object)
        return out


def _bytes_column(values: list[bytes]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def row_pixels(batch: dict[str, np.ndarray], metric: str, row: int) -> np.ndarray:
    """The uint8 (C, H, W) pixels of ``metric`` for ``row`` (following ``source_column``)."""
    holder = str(batch[source_column(metric)][row]) or metric
    shape = tuple(int(x) for x in batch[shape_column(holder)][row])
    # ljust: a fixed-width numpy bytes array (dtype 'S') drops trailing zero bytes
    data = bytes(batch[pixel_column(holder)][row]).ljust(int(np.prod(shape)), b"\0")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def release_pixels(batch: dict[str, np.ndarray], metric: str) -> None:
    """After ``metric``'s stage: empty every pixel cell no pending stage still needs (in place).

    Cells become b'' rather than columns being dropped, so every batch keeps one schema; the
    bytes stop travelling to the next stages.
    """
    batch[pending_column(metric)] = np.zeros(len(batch[pending_column(metric)]), dtype=bool)
    pending = [c[len(pending_column("")):] for c in batch if c.startswith(pending_column(""))]
    for holder in pending:
        cells = batch[pixel_column(holder)]
        needed = np.array(batch[pending_column(holder)], dtype=bool)
        for other in pending:
            if other != holder:
                needed |= np.array(batch[pending_column(other)], dtype=bool) & (batch[source_column(other)] == holder)
        if (~needed).any():
            cells = cells.copy()
            cells[~needed] = b""
            batch[pixel_column(holder)] = cells

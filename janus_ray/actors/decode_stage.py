"""CPU stage: open each image once and produce every enabled metric's pixel tensor from it."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from janus_ray.actors.journal import KILLED_TWICE, CrashJournal, open_journal
from janus_ray.images import DEFAULT_TRANSFORM_SIDE, ImageSizeError, open_image
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
    preprocessing from the original-mode image. Failures become per-row error strings: an
    unreadable file, an image whose preprocessing would exceed ``max_pixels`` (checked on the
    header, before decoding: see ``janus_ray.images.check_image_size``), a failed transform, and,
    with ``journal_dir``, an image that killed the actor twice (see ``actors/journal.py``).
    """

    def __init__(self, metrics: dict[str, dict[str, Any]], max_pixels: int | None,
                 journal_dir: str | None = None):
        # metrics: {metric: {"scorer": name, "weights_root": str, "options": {...}}}
        self.max_pixels = max_pixels
        self.transforms = {
            metric: get_scorer_class(spec["scorer"]).build_image_transform(Path(spec["weights_root"]), **spec["options"])
            for metric, spec in metrics.items()
        }
        # Each transform's output shape, known before any row: rows without pixels get zeros of
        # exactly that shape, so blocks from different batches always merge into one tensor column.
        self.shapes: dict[str, tuple[int, ...]] = {m: _probe_shape(t) for m, t in self.transforms.items()}
        # The size guard covers the largest resize and, if any transform pads to a square, that too.
        sides = [s[-1] for s in self.shapes.values() if s and len(s) == 3]
        self.guard = {"side": max([DEFAULT_TRANSFORM_SIDE, *sides]),
                      "square_pad": any(getattr(t, "square_pad", False) for t in self.transforms.values())}
        self.journal = open_journal(journal_dir, "decode")
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
        self._decode_errors = list(batch["decode_error"])
        self._pixels: dict[str, list[np.ndarray | None]] = {m: [None] * n for m in self.transforms}
        self._errors: dict[str, list[str]] = {m: [""] * n for m in self.transforms}
        todo = [i for i in range(n) if not self._decode_errors[i]
                and any(batch[todo_column(m)][i] for m in self.transforms)]
        run_journaled(self.journal, batch.get("row_id"), todo,
                      lambda rows: [self._decode_row(batch, i) for i in rows],
                      lambda i: self._decode_row(batch, i),
                      lambda i: self._decode_errors.__setitem__(i, f"decoding: {KILLED_TWICE}"))
        out = dict(batch)
        out["decode_error"] = np.array(self._decode_errors, dtype=object)
        for metric in self.transforms:
            out[pixel_column(metric)] = self._stack(metric, self._pixels[metric])
            out[stage_error_column(metric)] = np.array(self._errors[metric], dtype=object)
        return out

    def _decode_row(self, batch: dict[str, np.ndarray], i: int) -> None:
        wanted = [m for m in self.transforms if batch[todo_column(m)][i]]
        try:
            image = open_image(str(batch["image_path"][i]), max_pixels=self.max_pixels, **self.guard)
        except ImageSizeError as exc:
            self._decode_errors[i] = f"image too large (DecompressionBombError): {exc}"
            return
        except Exception as exc:  # noqa: BLE001 - any unreadable file costs its row only
            self._decode_errors[i] = f"unreadable image: {describe_error(exc)}"
            return
        done: dict[str, np.ndarray] = {}
        for metric in wanted:
            source = self.same_as.get(metric, metric)
            try:
                if source not in done:
                    done[source] = np.ascontiguousarray(self.transforms[source](image), dtype=np.float32)
                expected = self.shapes.get(metric) or done[source].shape
                self.shapes[metric] = expected
                if done[source].shape != expected:  # one column holds one shape
                    raise ValueError(f"pixel shape {done[source].shape} differs from {expected}")
                self._pixels[metric][i] = done[source]
            except Exception as exc:  # noqa: BLE001
                self._errors[metric][i] = f"preprocessing failed: {describe_error(exc)}"

    def _stack(self, metric: str, arrays: list[np.ndarray | None]) -> np.ndarray:
        """Stack into one tensor column; rows without pixels get zeros of the transform's shape."""
        shape = self.shapes.get(metric) or next((a.shape for a in arrays if a is not None), None)
        if shape is None:  # a transform that failed even on the probe image, and no pixels here
            shape = (1,)
        filler = np.zeros(shape, dtype=np.float32)
        return np.stack([a if a is not None else filler for a in arrays])


def _probe_shape(transform) -> tuple[int, ...] | None:
    """The output shape of ``transform`` on a small RGB image (None if it fails on one)."""
    try:
        return tuple(np.asarray(transform(Image.new("RGB", (48, 32), (127, 127, 127)))).shape)
    except Exception:  # noqa: BLE001 - then the first real output gives the shape
        return None


def run_journaled(journal: CrashJournal | None, row_ids, rows: list[int],
                  process_batch: Callable[[list[int]], None], process_row: Callable[[int], None],
                  fail: Callable[[int], None]) -> None:
    """Process the batch's row positions ``rows``, guarded by the crash journal (if any).

    First attempt at a batch: ``process_batch(rows)`` under one batch entry. A batch whose entry
    exists (an actor died on it): ``process_row(i)`` row by row, each under its own entry; a row
    whose entry exists (it killed the actor again) gets ``fail(i)`` and is not run.
    """
    if journal is None or row_ids is None or not rows:
        process_batch(rows)
        return
    ids = [int(row_ids[i]) for i in rows]
    key = journal.batch_key(ids)
    if not journal.exists(key):
        journal.begin(key, ",".join(map(str, ids)))
        process_batch(rows)
        journal.end(key)
        return
    killed = []
    for i, row_id in zip(rows, ids):
        row_key = journal.row_key(row_id)
        if journal.exists(row_key):
            fail(i)
            killed.append(row_key)  # kept until the batch is done, or it would run again
            continue
        journal.begin(row_key)
        process_row(i)
        journal.end(row_key)
    for row_key in killed:
        journal.end(row_key)
    journal.end(key)

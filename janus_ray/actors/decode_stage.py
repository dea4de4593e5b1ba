"""CPU stage: open each image once and produce every enabled metric's pixel tensor from it."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from janus_ray.actors.journal import KILLED_TWICE, CrashJournal, open_journal
from janus_ray.actors.pixel_store import as_pixel_client
from janus_ray.columns import (  # noqa: F401  (re-exported: the old import place)
    IMAGE_SHA256,
    pending_column,
    pixel_column,
    pixel_key_column,
    pixel_row_column,
    shape_column,
    source_column,
    stage_error_column,
    todo_column,
)
from janus_ray.images import DEFAULT_TRANSFORM_SIDE, ImageSizeError, open_image
from janus_ray.metrics import get_scorer_class
from janus_ray.quick_exit import QuickExitWhenReleased


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DecodeStage(QuickExitWhenReleased):
    """Ray Data UDF: ``image_path`` -> each enabled metric's uint8 pixels at model resolution.

    Each image is decoded exactly once; each metric's ``to_uint8`` (``PixelTransform``) reproduces
    its reference's resize / crop from the original-mode image; rescale and normalise run in the
    metric actor. Pixels equal to an earlier metric's for the same row (HPSv2 / HPSv2.1 always;
    VQAScore and CLIPScore for square images; often the 224 px metrics) are shipped once: the
    later metric's ``source_column`` names the holder. Per row and metric the columns are
    ``pixel_column`` (bytes), ``shape_column``, ``source_column``, ``pending_column`` and
    ``stage_error_column``. Failures become per-row error strings: an unreadable file, an image
    whose preprocessing would exceed ``max_pixels`` (checked on the header, before decoding: see
    ``janus_ray.images.check_image_size``), a failed transform, and, with ``journal_dir``, an
    image that killed the actor twice (see ``actors/journal.py``).

    ``pixel_store``: a pixel store (``actors/pixel_store.py``: its spec dict, or a client object
    with the same ``store`` method). With one, each batch's pixels go to the store once and the
    rows carry ``pixel_key_column`` / ``pixel_row_column`` with empty pixel cells; if the store
    cannot take them, they stay in the cells (as without a store).
    """

    def __init__(self, metrics: dict[str, dict[str, Any]], max_pixels: int | None,
                 journal_dir: str | None = None, pixel_store: Any = None):
        # metrics: {metric: {"scorer": name, "weights_root": str, "options": {...}}}
        self.max_pixels = max_pixels
        self.pixels = as_pixel_client(pixel_store)
        self.transforms = {
            metric: get_scorer_class(spec["scorer"]).build_image_transform(Path(spec["weights_root"]), **spec["options"])
            for metric, spec in metrics.items()
        }
        # Each transform's output shape, known before any row (the size guard needs the sides).
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
        self.arm_quick_exit()  # the process skips Python's teardown once Ray Data releases it

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image_path"])
        metrics = list(self.transforms)
        self._decode_errors = list(batch["decode_error"])
        self._payload: dict[str, list[bytes]] = {m: [b""] * n for m in metrics}
        self._shapes = {m: np.zeros((n, 3), dtype=np.int64) for m in metrics}
        self._sources: dict[str, list[str]] = {m: [""] * n for m in metrics}
        self._errors: dict[str, list[str]] = {m: [""] * n for m in metrics}
        self._sha256 = [""] * n
        todo = [i for i in range(n) if not self._decode_errors[i] and any(batch[todo_column(m)][i] for m in metrics)]
        run_journaled(self.journal, batch.get("row_id"), todo,
                      lambda rows: [self._decode_row(batch, i) for i in rows],
                      lambda i: self._decode_row(batch, i),
                      lambda i: self._decode_errors.__setitem__(i, f"decoding: {KILLED_TWICE}"))
        out = dict(batch)
        out["decode_error"] = np.array(self._decode_errors, dtype=object)
        out[IMAGE_SHA256] = np.array(self._sha256, dtype=object)
        for metric in metrics:
            out[pixel_column(metric)] = _bytes_column(self._payload[metric])
            out[shape_column(metric)] = self._shapes[metric]
            out[source_column(metric)] = np.array(self._sources[metric], dtype=object)
            out[pending_column(metric)] = np.ones(n, dtype=bool)
            out[stage_error_column(metric)] = np.array(self._errors[metric], dtype=object)
        if self.pixels is not None:
            self._to_store(out, metrics, n)
        return out

    def _to_store(self, out: dict[str, np.ndarray], metrics: list[str], n: int) -> None:
        """Move the batch's pixel bytes to the pixel store (one object per holder metric); the rows
        keep a key and their index. A store that fails leaves the pixels in the rows."""
        pixels = {}
        for metric in metrics:
            cells = self._payload[metric]
            if any(cells):
                offsets = np.zeros(n + 1, dtype=np.int64)
                np.cumsum([len(c) for c in cells], out=offsets[1:])
                pixels[metric] = (offsets, cells)
        key = ""
        if pixels:
            try:
                key = self.pixels.store(pixels, n)
            except Exception as exc:  # noqa: BLE001 - the rows still carry their pixels
                if not getattr(self, "_store_warned", False):  # once per actor, not per batch
                    self._store_warned = True
                    print(f"janus_ray: pixel store unavailable ({describe_error(exc)}); pixels travel in "
                          "the rows", flush=True)
        if key:
            for metric in pixels:
                out[pixel_column(metric)] = _bytes_column([b""] * n)
        out[pixel_key_column()] = np.full(n, key, dtype=object)
        out[pixel_row_column()] = np.arange(n, dtype=np.int64)

    def _decode_row(self, batch: dict[str, np.ndarray], i: int) -> None:
        wanted = [m for m in self.transforms if batch[todo_column(m)][i]]
        path = str(batch["image_path"][i])
        try:
            # read once: the bytes decoded are the bytes hashed (the resume cache's key; on a first
            # run the driver does not read the images at all)
            data = Path(path).read_bytes()
            self._sha256[i] = hashlib.sha256(data).hexdigest()
            image = open_image(path, max_pixels=self.max_pixels, data=data, **self.guard)
        except ImageSizeError as exc:
            self._decode_errors[i] = f"image too large (DecompressionBombError): {exc}"
            return
        except Exception as exc:  # noqa: BLE001 - any unreadable file costs its row only
            self._decode_errors[i] = f"unreadable image: {describe_error(exc)}"
            return
        done: dict[str, np.ndarray] = {}  # transform owner -> its pixels
        shipped: list[tuple[str, np.ndarray]] = []  # (metric holding them, pixels)
        for metric in wanted:
            owner = self.same_as.get(metric, metric)
            try:
                if owner not in done:
                    done[owner] = np.ascontiguousarray(self.transforms[owner].to_uint8(image), dtype=np.uint8)
                pixels = done[owner]
            except Exception as exc:  # noqa: BLE001
                self._errors[metric][i] = f"preprocessing failed: {describe_error(exc)}"
                continue
            holder = next((m for m, px in shipped if px.shape == pixels.shape and np.array_equal(px, pixels)), None)
            if holder is None:
                self._payload[metric][i] = pixels.tobytes()
                self._shapes[metric][i] = pixels.shape
                shipped.append((metric, pixels))
            else:
                self._sources[metric][i] = holder


def _probe_shape(transform) -> tuple[int, ...] | None:
    """The output shape of ``transform`` on a small RGB image (None if it fails on one)."""
    try:
        return tuple(np.asarray(transform(Image.new("RGB", (48, 32), (127, 127, 127)))).shape)
    except Exception:  # noqa: BLE001 - then the guard uses the default side
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


def _bytes_column(values: list[bytes]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def row_pixels(batch: dict[str, np.ndarray], metric: str, row: int) -> np.ndarray:
    """The uint8 (C, H, W) pixels of ``metric`` for ``row`` (following ``source_column``)."""
    holder = str(batch[source_column(metric)][row]) or metric
    shape = tuple(int(x) for x in batch[shape_column(holder)][row])
    data = bytearray(batch[pixel_column(holder)][row])  # one copy, writable (torch warns on read-only arrays)
    size = int(np.prod(shape))
    if len(data) < size:  # a fixed-width numpy bytes array (dtype 'S') drops trailing zero bytes
        data.extend(bytes(size - len(data)))
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

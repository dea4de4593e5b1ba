"""GPU (or CPU) stage: one scorer loaded once per actor, scoring batches of pre-transformed pixels."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from janus_ray.actors.decode_stage import (
    describe_error,
    release_pixels,
    row_pixels,
    run_journaled,
)
from janus_ray.actors.journal import KILLED_TWICE, open_journal
from janus_ray.actors.pixel_store import as_pixel_client
from janus_ray.columns import (  # noqa: F401  (re-exported)
    MODEL_NOT_LOADED,
    load_error_text,
    oom_column,
    output_column,
    pixel_column,
    pixel_key_column,
    pixel_row_column,
    source_column,
    stage_error_column,
    time_column,
    todo_column,
)
from janus_ray.errors import JanusRayError
from janus_ray.metrics import get_scorer_class
from janus_ray.quick_exit import QuickExitWhenReleased

NON_FINITE = "non-finite score"
PIXELS_LOST = "pixels lost"


class MetricActor(QuickExitWhenReleased):
    """Ray Data UDF for one metric: adds ``_jr_out_<key>`` scores and a final per-row error."""

    #: batch cap after a CUDA out-of-memory (None: the whole batch), and halvings since the last batch
    max_batch: int | None = None
    oom_halvings: int = 0

    def __init__(
        self,
        metric: str,
        scorer: str,
        weights_root: str,
        device: str,
        dtype: str | None,
        options: dict[str, Any],
        torch_threads: int | None = None,
        journal_dir: str | None = None,
        tf32: bool = False,
        pixel_store: Any = None,
        report_done: bool = False,
    ):
        """``pixel_store``: the per-metric layout's pixel store (its spec dict, or a client object
        with ``fetch`` / ``done``; see actors/pixel_store.py): rows whose pixels are there are read
        from it. ``report_done``: this is the chain's last stage, which tells the store which rows
        are finished (so it frees their pixels)."""
        import torch

        from janus_ray.metrics.base import set_tf32

        if torch_threads:
            torch.set_num_threads(torch_threads)
        if tf32:  # opt-in; only ever switched on, so one fp32 metric cannot turn it off for another
            set_tf32(True)
        cls = get_scorer_class(scorer)
        self.metric = metric
        self.keys = list(cls.output_columns(**options))
        self.load_error: str | None = None
        try:
            self.scorer = cls(Path(weights_root), device=device, dtype=dtype, **options)
        except JanusRayError as exc:
            # A checkpoint that does not match its model: raised here, Ray would restart the actor,
            # print its traceback for every try and end the run in ~300 lines of ActorDiedError.
            # Kept instead, sent back on every row (load_error_text), and raised by the driver.
            self.scorer = None
            self.load_error = load_error_text(exc)
        self.max_batch: int | None = None  # set by the first CUDA out-of-memory (then halved again)
        self.oom_halvings = 0
        self.journal = open_journal(journal_dir, f"metric-{metric}")
        self.pixels = as_pixel_client(pixel_store)
        self.report_done = report_done
        self.arm_quick_exit()  # the process skips Python's teardown once Ray Data releases it

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        n = len(batch["image_path"])
        if self.load_error is not None:  # no model: every row carries why, the driver ends the run
            return self._load_failed(batch, started)
        errors = list(batch[stage_error_column(self.metric)])
        todo = batch[todo_column(self.metric)]
        eligible = [
            i for i in range(n) if todo[i] and not errors[i] and not batch["decode_error"][i] and batch["has_prompt"][i]
        ]
        scores = {key: np.full(n, np.nan, dtype=np.float64) for key in self.keys}
        source = self._with_stored_pixels(batch, eligible, errors) if eligible else batch
        eligible = [i for i in eligible if not errors[i]]
        if eligible:
            # uint8 pixels are decoded lazily per row: a row that kills the actor is isolated by the journal
            pixels = {i: row_pixels(source, self.metric, i) for i in eligible}
            prompts = batch["prompt"]
            run_journaled(self.journal, batch.get("row_id"), eligible,
                          lambda rows: self._score_rows(rows, pixels, prompts, scores, errors),
                          lambda i: self._score_rows([i], pixels, prompts, scores, errors),
                          lambda i: errors.__setitem__(i, f"scoring: {KILLED_TWICE}"))
        out = dict(batch)
        release_pixels(out, self.metric)  # pixels no later stage needs stop travelling here
        for key, values in scores.items():
            out[output_column(key)] = values
        out[stage_error_column(self.metric)] = np.array(errors, dtype=object)
        out[time_column(self.metric)] = np.full(n, (time.perf_counter() - started) / n)
        out[oom_column(self.metric)] = np.full(n, self.oom_halvings, dtype=np.int64)
        self.oom_halvings = 0
        if self.report_done:
            self._report_done(batch)
        return out

    def _load_failed(self, batch: dict[str, np.ndarray], started: float) -> dict[str, np.ndarray]:
        n = len(batch["image_path"])
        out = dict(batch)
        release_pixels(out, self.metric)
        for key in self.keys:
            out[output_column(key)] = np.full(n, np.nan, dtype=np.float64)
        out[stage_error_column(self.metric)] = np.full(n, self.load_error, dtype=object)
        out[time_column(self.metric)] = np.full(n, (time.perf_counter() - started) / max(n, 1))
        out[oom_column(self.metric)] = np.full(n, MODEL_NOT_LOADED, dtype=np.int64)
        if self.report_done:
            self._report_done(batch)
        return out

    def _with_stored_pixels(self, batch: dict[str, np.ndarray], rows: list[int], errors: list) -> dict[str, np.ndarray]:
        """``batch`` with the pixels ``rows`` need filled in from the pixel store, as a local copy
        (the output batch keeps its empty cells). Rows whose pixels cannot be read get a
        'pixels lost' error. Without a key column: ``batch`` itself."""
        if pixel_key_column() not in batch:
            return batch
        keys, index = batch[pixel_key_column()], batch[pixel_row_column()]
        wanted: dict[int, tuple[str, str]] = {}  # row -> (key, holder)
        for i in rows:
            holder = str(batch[source_column(self.metric)][i]) or self.metric
            if len(batch[pixel_column(holder)][i]) == 0 and str(keys[i]):
                wanted[i] = (str(keys[i]), holder)
        if not wanted:
            return batch
        needs: dict[str, set[str]] = {}
        for key, holder in wanted.values():
            needs.setdefault(key, set()).add(holder)
        if self.pixels is None:
            fetched: dict = {key: RuntimeError("no pixel store configured") for key in needs}
        else:
            fetched = self.pixels.fetch(needs)
        local = dict(batch)
        for holder in {h for _, h in wanted.values()}:
            local[pixel_column(holder)] = np.asarray(batch[pixel_column(holder)]).astype(object)
        for i, (key, holder) in wanted.items():
            held = fetched.get(key)
            if held is None:
                held = RuntimeError(f"the store returned nothing for batch {key}")
            elif not isinstance(held, BaseException) and holder not in held:
                held = RuntimeError(f"batch {key} holds no pixels of {holder}")
            if isinstance(held, BaseException):
                errors[i] = f"{PIXELS_LOST}: {describe_error(held)}"
                continue
            offsets, data = held[holder]["offsets"], held[holder]["data"]
            r = int(index[i])
            local[pixel_column(holder)][i] = data[offsets[r]:offsets[r + 1]]
        return local

    def _report_done(self, batch: dict[str, np.ndarray]) -> None:
        """Tell the store the batch's rows are finished (best effort: a lost report only keeps the
        pixels until the end of the run)."""
        if self.pixels is None or pixel_key_column() not in batch:
            return
        finished: dict[str, list[int]] = {}
        for key, r in zip(batch[pixel_key_column()], batch[pixel_row_column()]):
            if str(key):
                finished.setdefault(str(key), []).append(int(r))
        if finished:
            try:
                self.pixels.done(finished)
            except Exception as exc:  # noqa: BLE001
                print(f"janus_ray: could not report finished rows to the pixel store ({describe_error(exc)})",
                      flush=True)

    def _score_rows(self, rows: list[int], pixels: dict[int, np.ndarray], prompts: np.ndarray, scores: dict,
                    errors: list) -> None:
        """Score the rows in one batch (uint8 pixels, normalised by the scorer on its device); if the
        batch fails, retry row by row to isolate the culprit."""
        try:
            result = self._score_halving_on_oom(rows, pixels, prompts)
        except Exception as exc:  # noqa: BLE001
            if len(rows) == 1:
                errors[rows[0]] = f"scoring failed: {describe_error(exc)}"
                return
            for i in rows:
                self._score_rows([i], pixels, prompts, scores, errors)
            return
        values = {key: np.asarray(result[key], dtype=np.float64) for key in self.keys}
        finite = np.logical_and.reduce([np.isfinite(v) for v in values.values()])
        for key in self.keys:
            scores[key][rows] = np.where(finite, values[key], np.nan)
        for j in np.flatnonzero(~finite):  # fp16 overflow, a zero-norm feature: never a silent NaN
            bad = ", ".join(f"{key}={values[key][j]}" for key in self.keys if not np.isfinite(values[key][j]))
            errors[rows[j]] = f"{NON_FINITE} ({bad})"

    def _score_halving_on_oom(self, rows: list[int], pixels: dict[int, np.ndarray], prompts: np.ndarray) -> dict[str, list]:
        """Score ``rows`` in chunks of at most ``max_batch``; a CUDA out-of-memory error halves
        ``max_batch`` (down to 1, for the rest of this actor's life) and retries the chunk."""
        import torch

        out: dict[str, list] = {key: [] for key in self.keys}
        start = 0
        while start < len(rows):
            size = min(len(rows) - start, self.max_batch or len(rows))
            chunk = rows[start:start + size]
            try:
                part = self.scorer.score_uint8([pixels[i] for i in chunk], [str(prompts[i]) for i in chunk])
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                torch.cuda.empty_cache()
                self.max_batch = max(1, size // 2)
                self.oom_halvings += 1
                continue
            for key in self.keys:
                out[key].extend(part[key])
            start += size
        return out

"""Column names of the Ray batches between the driver and the stages, and the result-batch check.

A row of the dataset (table.dataset_rows) carries ``row_id``, the pair's fields, ``decode_error``
and one ``todo_column(metric)`` per metric. The decode stage adds per metric the uint8 pixels
(``pixel_column``, ``shape_column``, ``source_column``, ``pending_column``); each metric actor adds
``output_column(key)`` per output key, ``stage_error_column``, ``time_column`` and ``oom_column``.
The driver receives ``result_columns(plans)`` of each batch (stream.stream_scores projects them).
No Ray here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from janus_ray.errors import JanusRayError

ROW_ID = "row_id"
DECODE_ERROR = "decode_error"
#: per row: sha256 (hex) of the bytes the decode stage read and decoded ('' = not read): the resume
#: cache's key when the driver did not hash the images (a first run: ``pipeline.hashes_deferred``)
IMAGE_SHA256 = "image_sha256"


def pixel_column(metric: str) -> str:
    """uint8 pixels of ``metric``'s ``to_uint8``, one ``bytes`` per row (b'' = none or shared)."""
    return f"_jr_px_{metric}"


def pixel_key_column() -> str:
    """Per row (per-metric layout with a pixel store): the key of its decode batch's pixels in the
    store ('' = the pixels, if any, are in the row's ``pixel_column`` cells)."""
    return "_jr_pxkey"


def pixel_row_column() -> str:
    """Per row (with ``pixel_key_column``): the row's index in its decode batch (int64)."""
    return "_jr_pxrow"


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
    """Per row: the metric's error text ('' = none)."""
    return f"_jr_err_{metric}"


def todo_column(metric: str) -> str:
    """Per row: bool, this metric is to be scored for the row (not cached)."""
    return f"_jr_todo_{metric}"


def output_column(key: str) -> str:
    """Per row: float score of one output key (NaN = not scored)."""
    return f"_jr_out_{key}"


def time_column(metric: str) -> str:
    """Per row: the actor's seconds for the row's batch, split over its rows (float)."""
    return f"_jr_sec_{metric}"


def oom_column(metric: str) -> str:
    """Per row: how many times this actor halved its batch on CUDA out-of-memory (meta counts them);
    ``MODEL_NOT_LOADED`` (-1): the actor has no model, the row's stage error says why."""
    return f"_jr_oom_{metric}"


class PlannedMetric(Protocol):
    metric: str
    columns: dict[str, str]  # output key -> result column


class ResultBatchError(JanusRayError):
    """A result batch reached the driver without a column the driver reads (a stage bug)."""


def result_columns(plans: Iterable[PlannedMetric]) -> list[str]:
    """The columns of a result batch for these metrics, in order (what the stream projects)."""
    columns = [ROW_ID, DECODE_ERROR, IMAGE_SHA256]
    for plan in plans:
        columns += [output_column(k) for k in plan.columns]
        columns += [stage_error_column(plan.metric), time_column(plan.metric), oom_column(plan.metric)]
    return columns


def check_result_batch(batch: Any, plans: Sequence[PlannedMetric]) -> None:
    """Raise ResultBatchError naming the missing columns (and the metric needing each) when
    ``batch`` (a pandas frame or a dict of arrays) lacks one of ``result_columns(plans)``."""
    present = set(batch.keys()) if isinstance(batch, dict) else set(batch.columns)
    missing = []
    for column in (ROW_ID, DECODE_ERROR):
        if column not in present:
            missing.append(column)
    for plan in plans:
        for column in result_columns([plan])[3:]:
            if column not in present:
                missing.append(f"{column} ({plan.metric})")
    if missing:
        raise ResultBatchError(
            f"A result batch lacks column(s) {', '.join(missing)}; it has: {', '.join(sorted(present))}."
        )


#: how a row's stage error starts when its actor could not load the model (``load_error_text``)
LOAD_FAILED = "model not loaded: "
#: ``oom_column``'s value on the rows of an actor whose model did not load (never a halving count)
MODEL_NOT_LOADED = -1
_LOAD_FAILED_TEXT = re.compile(rf"^{re.escape(LOAD_FAILED)}(\w+): (.*)$", re.DOTALL)


#: the longest error text an actor sends back (a state dict's whole key list can run to pages)
LOAD_ERROR_CHARS = 1200


def load_error_text(exc: JanusRayError) -> str:
    """The stage error every row gets from an actor whose model did not load (a checkpoint that
    does not match its model): ``'model not loaded: <ErrorClass>: <the error>'``, its lines joined
    with spaces (torch names the missing keys on the lines after the first), at most
    ``LOAD_ERROR_CHARS`` characters."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if len(text) > LOAD_ERROR_CHARS:
        text = text[: LOAD_ERROR_CHARS - 4].rstrip() + " ..."
    return f"{LOAD_FAILED}{type(exc).__name__}: {text}"


def load_failure(batch: Any, plans: Sequence[PlannedMetric]) -> JanusRayError | None:
    """The error to end the run with when a row of ``batch`` (a pandas frame) comes from an actor
    whose model did not load (its ``oom_column`` is ``MODEL_NOT_LOADED``, its stage error
    ``load_error_text``): that janus-ray error rebuilt, else None. Per batch one integer
    comparison per metric; the text is read only then."""
    from janus_ray.errors import actors_load_error

    for plan in plans:
        failed = batch[oom_column(plan.metric)].to_numpy() == MODEL_NOT_LOADED
        if failed.any():
            text = str(batch[stage_error_column(plan.metric)].to_numpy()[failed.argmax()])
            match = _LOAD_FAILED_TEXT.match(text)
            return actors_load_error(match.group(1), match.group(2)) if match else actors_load_error("", text)
    return None

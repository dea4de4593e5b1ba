"""Cost and memory metadata of a scorer, and the GPU-measured table that replaces the estimates.

Pure Python (no torch, no Ray): the planner (janus_ray/plan.py) reads these numbers to size pools.
Each scorer class carries a ``cost`` ClassVar (VQAScore: ``costs_by_model``, one per model option);
every number there is an estimate with its source in a comment. ``measured_costs.json`` next to
this file, written by the GPU measurement kit, replaces the estimates for the metrics it lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from janus_ray.errors import ConfigError

#: bytes per element of each dtype name
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

#: where the GPU kit writes its table
MEASURED_COSTS_PATH = Path(__file__).with_name("measured_costs.json")


@dataclass(frozen=True)
class ModelCost:
    """Architecture-level cost of one model (one image-prompt pair = one 'image').

    params: parameter count of every weight the scorer loads (architecture; see each class).
    file_dtype: element type of the published checkpoint, to turn file bytes into parameters.
    activation_gb_per_image: peak activation memory per image of a batch at the CUDA dtype, GB.
    gflops_per_image: forward FLOPs per image-prompt pair, in GFLOP.
    """

    params: float
    file_dtype: str
    activation_gb_per_image: float
    gflops_per_image: float


@dataclass(frozen=True)
class MeasuredCost:
    """One metric's row of measured_costs.json (batch_size images per forward, on ``gpu``)."""

    dtype: str
    batch_size: int
    images_per_s: float
    peak_gpu_memory_gb: float
    weights_gb: float
    activation_gb_per_image: float


@dataclass(frozen=True)
class MeasuredTable:
    """measured_costs.json: ``{"gpu", "measured_at", "metrics": {METRIC: {...}}}``."""

    gpu: str
    measured_at: str
    metrics: dict[str, MeasuredCost]


_FIELDS = {"dtype": str, "batch_size": int, "images_per_s": (int, float), "peak_gpu_memory_gb": (int, float),
           "weights_gb": (int, float), "activation_gb_per_image": (int, float)}


def load_measured_costs(path: str | Path | None = None) -> MeasuredTable | None:
    """Read the measured table; None when the file does not exist.

    Raises:
        ConfigError: the file exists but is not the documented format (names the field).
    """
    path = Path(path) if path is not None else MEASURED_COSTS_PATH
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"Measured cost table {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise ConfigError(f"Measured cost table {path} must be an object with a 'metrics' mapping.")
    metrics = {}
    for metric, row in data["metrics"].items():
        if not isinstance(row, dict):
            raise ConfigError(f"Measured cost table {path}: metrics.{metric} must be an object.")
        for name, kind in _FIELDS.items():
            value = row.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(f"Measured cost table {path}: metrics.{metric}.{name} is missing or not {kind}.")
        metrics[metric] = MeasuredCost(**{name: row[name] for name in _FIELDS})
    return MeasuredTable(gpu=str(data.get("gpu", "")), measured_at=str(data.get("measured_at", "")), metrics=metrics)

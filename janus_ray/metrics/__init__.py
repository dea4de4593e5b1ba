"""A lazy registry of scorers: user-facing names -> classes, imported on first use.

Scorer names are the metric keys (``vqascore`` ...); aliases are the model names the earlier tool's
flags used (``clip-flant5-xxl``, ``openai:ViT-L-14-336`` ...) and may carry options.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from janus_ray import _offline  # noqa: F401  (offline env before any HF import)
from janus_ray.errors import UnknownNameError
from janus_ray.metrics.base import Scorer


@dataclass(frozen=True)
class ScorerEntry:
    """Where a scorer class lives and the options its name implies."""

    target: str  # "module:Class"
    options: dict[str, Any] = field(default_factory=dict)
    #: a test / benchmark scorer (``dummy``), not one of the metrics: left out of ``list_scorers()``
    testing_only: bool = False


SCORERS: dict[str, ScorerEntry] = {
    "vqascore": ScorerEntry("janus_ray.metrics.vqa_score:VQAScorer"),
    "clipscore": ScorerEntry("janus_ray.metrics.clip_score:CLIPScorer"),
    "itmscore": ScorerEntry("janus_ray.metrics.blip2_itm:ITMScorer"),
    "hpsv2": ScorerEntry("janus_ray.metrics.hps_v2:HPSv2Scorer"),
    "hpsv2.1": ScorerEntry("janus_ray.metrics.hps_v2:HPSv21Scorer"),
    "pickscore": ScorerEntry("janus_ray.metrics.pick_score:PickScorer"),
    "imagereward": ScorerEntry("janus_ray.metrics.image_reward:ImageRewardScorer"),
    "dummy": ScorerEntry("janus_ray.metrics.dummy:DummyScorer", testing_only=True),
}

#: model names of the earlier tool's flags -> (scorer name, options)
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "clip-flant5-xxl": ("vqascore", {"model": "clip-flant5-xxl"}),
    "clip-flant5-xl": ("vqascore", {"model": "clip-flant5-xl"}),
    "openai:ViT-L-14-336": ("clipscore", {}),
    "blip2-itm": ("itmscore", {}),
    "pickscore-v1": ("pickscore", {}),
    "image-reward-v1": ("imagereward", {}),
}


def list_scorers(include_testing: bool = False) -> list[str]:
    """The metric scorer names, in the order of the output columns (plus ``dummy`` if asked)."""
    return [name for name, entry in SCORERS.items() if include_testing or not entry.testing_only]


def resolve_name(name: str) -> tuple[str, dict[str, Any]]:
    """A scorer name or alias -> (scorer name, implied options); unknown names list the valid ones."""
    if name in SCORERS:
        return name, {}
    if name in ALIASES:
        scorer_name, options = ALIASES[name]
        return scorer_name, dict(options)
    raise UnknownNameError("scorer", name, [*list_scorers(), *ALIASES])  # the test scorer still works, unlisted


def get_scorer_class(name: str) -> type[Scorer]:
    """Import and return the class registered under ``name`` (or an alias)."""
    scorer_name, _ = resolve_name(name)
    module_name, class_name = SCORERS[scorer_name].target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise TypeError(f"{SCORERS[scorer_name].target} is not a Scorer subclass")
    return cls


def scorer_options(name: str, **options: Any) -> dict[str, Any]:
    """Options implied by the name, overridden by explicit ones."""
    scorer_name, implied = resolve_name(name)
    return {**SCORERS[scorer_name].options, **implied, **options}


def load_scorer(
    name: str,
    weights_root: str | Path,
    device: str = "cpu",
    dtype: str | None = None,
    tf32: bool | None = None,
    **options: Any,
) -> Scorer:
    """Build a scorer by name, loading its model once from the local weights root.

    Args:
        name: a scorer name (``list_scorers()``) or an alias such as ``clip-flant5-xxl``.
        weights_root: the folder holding the checkpoints (see ``janus-ray check-weights``).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``float32``, ``bfloat16``, ``float16``; None = reference precision on CUDA, fp32 on CPU.
        tf32: True/False sets TF32 matmuls on CUDA for the whole process (``base.set_tf32``);
            None leaves the process setting as it is (PyTorch's default: off).

    Raises:
        UnknownNameError: the name is not registered (the message lists the valid ones).
        WeightsError: a needed file is missing or corrupt (the message names it and the layout).
    """
    cls = get_scorer_class(name)
    if tf32 is not None:
        from janus_ray.metrics.base import set_tf32

        set_tf32(tf32)
    return cls(weights_root, device=device, dtype=dtype, **scorer_options(name, **options))

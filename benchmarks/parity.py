"""Drift of every scorer output from the reference goldens on the parity fixtures, per precision option.

Used by ``scripts/parity_report.py`` (CPU) and ``scripts/gpu_check.py`` (CUDA). No Ray.

An *option* is a named way of running a scorer: a dtype plus scorer options plus TF32 on/off.
``OPTIONS`` lists those the project offers; ``drift_rows`` scores all parity cases in one batch
under one option and compares with the float32 goldens (which the reference computed on CPU).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from janus_ray.metrics import get_scorer_class, list_scorers, load_scorer
from janus_ray.metrics.base import set_tf32

PARITY = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity"

#: our output key -> golden key (where the names differ)
GOLDEN_KEY = {"pickscore": "pickscore__t2v_metrics_cosine", "pickscore_scaled": "pickscore"}

#: float32 parity acceptance (the issue's CUDA target): absolute, and relative for vqascore
#: (its values are ~1e-3 with random weights, so an absolute bound would say nothing).
FLOAT32_ATOL = 1e-4
RELATIVE_KEYS = ("vqascore",)


@dataclass(frozen=True)
class Option:
    """One way of running scorers: ``dtype`` None = each scorer's reference (CUDA) precision."""

    name: str
    dtype: str | None
    scorer_options: dict[str, Any] = field(default_factory=dict)
    tf32: bool = False
    only: tuple[str, ...] = ()  # scorers it applies to (empty = all)
    skip: tuple[str, ...] = ()  # scorers that reject it

    def applies_to(self, scorer: str) -> bool:
        return (not self.only or scorer in self.only) and scorer not in self.skip

    def dtype_for(self, scorer: str) -> str:
        return self.dtype or get_scorer_class(scorer).cuda_dtype


OPTIONS: tuple[Option, ...] = (
    Option("float32", "float32"),
    Option("reference", None),
    Option("bfloat16", "bfloat16"),
    Option("float16", "float16", skip=("vqascore",)),  # FlanT5 overflows in fp16: vqascore rejects it
    Option("tf32", "float32", tf32=True, skip=("vqascore",)),
    Option("sdpa-float32", "float32", {"attn_implementation": "sdpa"}, only=("vqascore",)),
    Option("sdpa-bfloat16", "bfloat16", {"attn_implementation": "sdpa"}, only=("vqascore",)),
)
OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}


def load_cases(parity: Path = PARITY) -> tuple[list[dict], dict]:
    """(cases, golden) of the parity fixture set."""
    lines = (parity / "cases.jsonl").read_text(encoding="utf-8").splitlines()
    cases = [json.loads(line) for line in lines if line.strip()]
    return cases, json.loads((parity / "golden.json").read_text(encoding="utf-8"))


def golden_for(golden: dict, key: str, case_id: str) -> float | None:
    value = golden[GOLDEN_KEY.get(key, key)][case_id]
    if value is None and f"{key}__variant_pil_rgb" in golden:  # hpsv2 on RGBA: the RGB path
        value = golden[f"{key}__variant_pil_rgb"][case_id]
    return value


def scorer_options(name: str) -> dict[str, Any]:
    """Options that make a scorer emit every output the goldens have (ITM's legacy variant)."""
    return {"legacy_itc_sigmoid": True} if name == "itmscore" else {}


def compare(name: str, key: str, values: list[float], cases: list[dict], golden: dict) -> dict[str, Any]:
    """max |diff| and max relative diff of one output against the goldens (null goldens skipped)."""
    diffs, rel = {}, 0.0
    for value, case in zip(values, cases):
        expected = golden_for(golden, key, case["case_id"])
        if expected is None:
            continue
        diffs[case["case_id"]] = abs(value - expected)
        rel = max(rel, diffs[case["case_id"]] / max(abs(expected), 1e-12))
    worst = max(diffs, key=diffs.get)
    return {
        "max_abs": max(diffs.values()),
        "max_rel": rel,
        "worst": worst,
        "cases": len(diffs),
        "all_finite": all(math.isfinite(v) for v in values),
    }


def within_float32_tolerance(row: dict[str, Any]) -> bool:
    bound = row["max_rel"] if row["output"] in RELATIVE_KEYS else row["max_abs"]
    return row["all_finite"] and bound <= FLOAT32_ATOL


def drift_rows(
    option: Option,
    device: str = "cpu",
    scorers: list[str] | None = None,
    parity: Path = PARITY,
    on_skip: Callable[[str, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Score every parity case in one batch per scorer under ``option``; one row per output key.

    A scorer that cannot run (its module's dependency missing, a dtype the device lacks) is reported
    through ``on_skip(scorer, reason)`` and left out. TF32 is switched back off afterwards.
    """
    cases, golden = load_cases(parity)
    images = [str(parity / "images" / c["image"]) for c in cases]
    prompts = [c["prompt"] for c in cases]
    rows = []
    for name in scorers or list_scorers():
        if not option.applies_to(name):
            continue
        dtype = option.dtype or "reference"
        try:
            dtype = option.dtype_for(name)  # imports the scorer's module (hps_v2 needs open_clip)
            set_tf32(option.tf32)
            scorer = load_scorer(name, parity / "weights", device=device, dtype=dtype,
                                 **scorer_options(name), **option.scorer_options)
            outputs = scorer.score_variants(images, prompts)
        except (ImportError, RuntimeError, NotImplementedError) as exc:
            if on_skip is None:
                raise
            on_skip(name, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        finally:
            set_tf32(False)
        del scorer
        for key, values in outputs.items():
            rows.append({"scorer": name, "output": key, "option": option.name, "dtype": dtype,
                         **compare(name, key, values, cases, golden)})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of drift rows."""
    lines = [
        "| scorer | output | option | dtype | max abs diff | max rel diff | worst case |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for r in rows:
        finite = "" if r["all_finite"] else " (non-finite!)"
        lines.append(f"| {r['scorer']} | {r['output']} | {r['option']} | {r['dtype']} | {r['max_abs']:.2e} | "
                     f"{r['max_rel']:.2e} | {r['worst']}{finite} |")
    return "\n".join(lines)

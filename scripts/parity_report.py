#!/usr/bin/env python
"""Largest difference of every scorer output from the reference goldens on the parity fixtures.

    python scripts/parity_report.py                      # float32 on CPU: the parity guarantee
    python scripts/parity_report.py --dtype reference    # each reference's own GPU precision
                                                         # (bf16 VQA, fp16 ITM/HPS) vs the fp32 goldens
    python scripts/parity_report.py --options            # the drift of every precision/speed option
                                                         # (markdown table, as in README "Precision")

The first two score each case one by one and all cases in one batch; ``--options`` scores all
cases in one batch per option (see ``janus_ray.bench.parity.OPTIONS``). On CPU, TF32 is a no-op
(the ``tf32`` rows equal ``float32``): its real drift is measured by ``scripts/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from janus_ray import list_scorers, load_scorer
from janus_ray.bench.parity import OPTIONS, OPTIONS_BY_NAME, compare, drift_rows, format_table, load_cases, scorer_options
from janus_ray.bench.parity import PARITY
from janus_ray.metrics import get_scorer_class


def per_dtype_report(dtype_arg: str, device: str) -> list[dict]:
    cases, golden = load_cases()
    images = [str(PARITY / "images" / c["image"]) for c in cases]
    prompts = [c["prompt"] for c in cases]
    rows = []
    print(f"{'scorer':<12} {'output':<18} {'dtype':<9} {'max |diff| 1-by-1':>18} {'max |diff| batch':>17} {'max rel diff':>13}  worst case")
    for name in list_scorers():
        dtype = get_scorer_class(name).cuda_dtype if dtype_arg == "reference" else dtype_arg
        scorer = load_scorer(name, PARITY / "weights", device=device, dtype=dtype, **scorer_options(name))
        batch = scorer.score_variants(images, prompts)
        single = [scorer.score_variants([i], [p]) for i, p in zip(images, prompts)]
        for key in batch:
            in_batch = compare(name, key, batch[key], cases, golden)
            one_by_one = compare(name, key, [s[key][0] for s in single], cases, golden)
            row = {"scorer": name, "output": key, "dtype": dtype, "max_abs_single": one_by_one["max_abs"],
                   "max_abs_batch": in_batch["max_abs"], "max_rel": in_batch["max_rel"], "worst": in_batch["worst"],
                   "cases": in_batch["cases"], "all_finite": all(math.isfinite(v) for v in batch[key])}
            rows.append(row)
            print(f"{name:<12} {key:<18} {dtype:<9} {row['max_abs_single']:>18.3e} {row['max_abs_batch']:>17.3e} "
                  f"{row['max_rel']:>13.3e}  {row['worst']}")
    return rows


def options_report(names: list[str], device: str) -> list[dict]:
    rows = []

    def skipped(scorer: str, reason: str) -> None:
        print(f"<!-- {scorer}: skipped ({reason}) -->")

    for name in names:
        rows += drift_rows(OPTIONS_BY_NAME[name], device=device, on_skip=skipped)
    print(f"Drift from the float32 goldens, {device}, torch {torch.__version__}, all parity cases in one batch:\n")
    print(format_table(rows))
    if device == "cpu" and "tf32" in names:
        print("\nTF32 is a CUDA tensor-core mode: on CPU the tf32 rows are float32 (no-op); see gpu_check.")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 | reference")
    parser.add_argument("--options", nargs="*", metavar="OPTION", choices=[o.name for o in OPTIONS],
                        help=f"drift table of these options (none listed: all of {', '.join(o.name for o in OPTIONS)})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the goldens were made single-threaded
    if args.options is not None:
        rows = options_report(args.options or [o.name for o in OPTIONS], args.device)
    else:
        rows = per_dtype_report(args.dtype, args.device)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

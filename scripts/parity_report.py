#!/usr/bin/env python
"""Largest difference of every scorer output from the reference goldens on the parity fixtures.

    python scripts/parity_report.py                      # float32 on CPU: the parity guarantee
    python scripts/parity_report.py --dtype reference    # each reference's own GPU precision
                                                         # (bf16 VQA, fp16 ITM/HPS) vs the fp32 goldens

Scores each case one by one and all cases in one batch; prints one row per output key.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from janus_ray import list_scorers, load_scorer
from janus_ray.metrics import get_scorer_class

PARITY = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity"

#: our output key -> golden key (where the names differ)
GOLDEN_KEY = {"pickscore": "pickscore__t2v_metrics_cosine", "pickscore_scaled": "pickscore"}


def golden_for(golden: dict, key: str, case_id: str) -> float | None:
    value = golden[GOLDEN_KEY.get(key, key)][case_id]
    if value is None and f"{key}__variant_pil_rgb" in golden:  # hpsv2 on RGBA: the RGB path
        value = golden[f"{key}__variant_pil_rgb"][case_id]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 | reference")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the goldens were made single-threaded
    cases = [json.loads(line) for line in (PARITY / "cases.jsonl").read_text().splitlines() if line.strip()]
    golden = json.loads((PARITY / "golden.json").read_text())
    images = [str(PARITY / "images" / c["image"]) for c in cases]
    prompts = [c["prompt"] for c in cases]
    rows = []
    print(f"{'scorer':<12} {'output':<18} {'dtype':<9} {'max |diff| 1-by-1':>18} {'max |diff| batch':>17} {'max rel diff':>13}  worst case")
    for name in list_scorers():
        dtype = get_scorer_class(name).cuda_dtype if args.dtype == "reference" else args.dtype
        options = {"legacy_itc_sigmoid": True} if name == "itmscore" else {}
        scorer = load_scorer(name, PARITY / "weights", device=args.device, dtype=dtype, **options)
        batch = scorer.score_variants(images, prompts)
        single = [scorer.score_variants([i], [p]) for i, p in zip(images, prompts)]
        for key in batch:
            diffs_single, diffs_batch, rel = {}, {}, 0.0
            for j, case in enumerate(cases):
                expected = golden_for(golden, key, case["case_id"])
                if expected is None:
                    continue
                diffs_single[case["case_id"]] = abs(single[j][key][0] - expected)
                diffs_batch[case["case_id"]] = abs(batch[key][j] - expected)
                rel = max(rel, diffs_batch[case["case_id"]] / max(abs(expected), 1e-12))
            worst = max(diffs_batch, key=diffs_batch.get)
            finite = all(math.isfinite(v) for v in batch[key])
            row = {"scorer": name, "output": key, "dtype": dtype, "max_abs_single": max(diffs_single.values()),
                   "max_abs_batch": max(diffs_batch.values()), "max_rel": rel, "worst": worst,
                   "cases": len(diffs_batch), "all_finite": finite}
            rows.append(row)
            print(f"{name:<12} {key:<18} {dtype:<9} {row['max_abs_single']:>18.3e} {row['max_abs_batch']:>17.3e} {rel:>13.3e}  {worst}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""A synthetic scored run (images + result files in the eval's exact format), for tests and docs.

``python -m tools.synthetic OUTPUT_ROOT`` writes six variant folders with small images
and made-up scores through ``janus_ray.results.write_folder_results``; no model runs. Its numbers
mean nothing: each variant gets a fixed offset per metric, each prompt a shared difficulty.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from janus_ray.demo import PROMPTS, VARIANTS, synthetic_image
from janus_ray.results import score_columns, write_folder_results, write_run_record

#: metric -> (column, higher_is_better, typical mean, typical sd)
METRICS = {
    "hpsv2": ("HPSv2Score", True, 0.27, 0.015),
    "vqascore": ("VQAScore", True, 0.70, 0.15),
    "clipscore": ("CLIPScore", True, 0.30, 0.03),
    "itmscore": ("ITMScore", True, 0.80, 0.12),
    "pickscore": ("PickScore", True, 0.215, 0.008),
    "imagereward": ("ImageReward", True, 0.20, 0.80),
}
EXTRA_PROMPTS = [
    "a <b>bold</b> & \"quoted\" prompt with <script>alert('x')</script> in it",
    "an astronaut riding a horse on the moon, digital art",
    "a watercolor painting of a lighthouse in a storm",
    "a close-up photo of a hummingbird drinking nectar",
    "a steampunk clock tower at sunrise",
    "a cozy library with a fireplace and leather armchairs",
]


def prompts(n: int) -> list[str]:
    """``n`` prompts: the demo's, a few more (one full of HTML special characters), then numbered ones."""
    base = PROMPTS + EXTRA_PROMPTS
    return [base[i] if i < len(base) else f"synthetic prompt number {i}" for i in range(n)]


def _meta(variant_dirs: list[Path], output_dir: Path | None, counts: dict) -> dict:
    """The parts of pipeline.run_meta the report reads, in the same shape."""
    metrics = {}
    for name, (column, hib, _, _) in METRICS.items():
        variants = {"pickscore_scaled": "PickScore_scaled"} if name == "pickscore" else {}
        metrics[name] = {
            "name": name, "column": column, "higher_is_better": hib, "range": [None, None],
            "reference": "synthetic", "variants": variants, "options": {},
            "columns": {name: column, **variants}, "device": "cpu", "dtype": "float32",
        }
    config = {"folders": [str(d) for d in variant_dirs], "output_dir": str(output_dir) if output_dir else None}
    return {"janus_ray_version": "synthetic", "metrics": metrics, "config": config, "counts": counts}


def _scores(rng: np.random.Generator, v: int, n_rows: int, difficulty: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for m, (name, (column, _, mean, sd)) in enumerate(METRICS.items()):
        # an overall quality per variant plus a per-metric twist: ranks differ between metrics
        quality, twist = ((v * 4) % 6 - 2.5) / 2.5, ((v + 5 * m) % 6 - 2.5) / 2.5
        offset = (0.7 * quality + 0.5 * twist) * 0.5 * sd
        out[column] = mean + offset + difficulty[:, m] * sd + rng.normal(0, 0.35 * sd, n_rows)
    out["PickScore_scaled"] = 100.0 * out["PickScore"]
    return out


def make_synthetic_run(
    root: Path, n_folders: int = 6, n_prompts: int = 24, samples: int = 1, output_dir: bool = False, seed: int = 0
) -> Path:
    """Write a scored run under ``root``; return its output root.

    Images go to ``root/<variant>/prompt_NNNN/img_SS.jpg``. Results go into the variant folders (output
    root = ``root``) or, with ``output_dir``, into ``root/results/<variant>`` (output root = that).
    The third folder has one failed image, the last folder lacks the last prompt.
    """
    names = (list(VARIANTS) + [f"variant_{i}" for i in range(6, n_folders)])[:n_folders]
    texts = prompts(n_prompts)
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1, (n_prompts * samples, len(METRICS)))
    variant_dirs = [root / name for name in names]
    out_root = root / "results" if output_dir else root
    columns = score_columns(["HPSv2Score", "VQAScore", "CLIPScore", "ITMScore", "PickScore", "ImageReward", "PickScore_scaled"])
    for v, folder in enumerate(variant_dirs):
        table = _folder_table(folder, v, texts, samples, difficulty, rng, drop_last=v == len(names) - 1 and v > 0)
        counts = {"images": len(table), "failed": int(table["HPSv2Score"].isna().sum())}
        write_folder_results(table, out_root / folder.name, columns, _meta(variant_dirs, out_root if output_dir else None, counts))
    write_run_record(out_root, [(folder, out_root / folder.name) for folder in variant_dirs])
    return out_root


def _folder_table(folder, v, texts, samples, difficulty, rng, drop_last: bool) -> pd.DataFrame:
    records = []
    for idx, prompt in enumerate(texts):
        for s in range(samples):
            rel = f"prompt_{idx:04d}/img_{s:02d}.jpg"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            synthetic_image(seed=v * 10_000 + idx * 10 + s, size=192).save(folder / rel, quality=90)
            records.append({"prompt_idx": idx, "prompt": prompt, "image_path": rel, "sample": s, "error": None})
    table = pd.DataFrame.from_records(records)
    for column, values in _scores(rng, v, len(table), difficulty).items():
        table[column] = values
    if v == 2:  # a failed image: no scores, an error message
        table.loc[3, [c for c, *_ in METRICS.values()] + ["PickScore_scaled"]] = np.nan
        table.loc[3, "error"] = "unreadable image: synthetic failure"
    return table.iloc[: len(table) - samples] if drop_last else table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.synthetic", description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--folders", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--output-dir", action="store_true", help="write results into ROOT/results instead of the folders")
    args = parser.parse_args(argv)
    print(make_synthetic_run(args.root, args.folders, args.prompts, args.samples, args.output_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

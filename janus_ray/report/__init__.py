"""``janus-ray report``: statistics, charts and image grids comparing the variant folders of a run.

Importing this package is cheap: scipy and matplotlib (the ``report`` extra) load only when a
report is built, so the CLI can register the subcommand without them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from janus_ray.errors import ConfigError

__all__ = ["add_report_subcommand", "build_report"]


def build_report(output_root: Path, baseline: str | None = None, seed: int = 0, n_resamples: int = 2000) -> list[Path]:
    """Write ``report.html``, ``report.md`` and ``comparison.csv`` at ``output_root``; return their paths.

    Args:
        output_root: the eval run's output root (holds summary.csv; one result folder per sub-directory).
        baseline: folder name every other folder is compared with (default: the first, sorted by name).
        seed: seed of the bootstrap resampling (the same seed gives the same CIs).
        n_resamples: bootstrap resamples per confidence interval.

    ``report.html`` is self-contained (no JavaScript); thumbnails are JPEG, at most 160 px long side,
    quality 70, and the whole file is capped at 15 MB.

    Raises:
        InputError: no result folder, or no score, under ``output_root``.
        ConfigError: ``baseline`` is not a result folder; scipy / matplotlib are not installed.
    """
    try:
        from janus_ray.report.build import build
    except ImportError as exc:
        raise ConfigError(f"The report needs scipy and matplotlib: pip install 'janus-ray[report]' ({exc}).") from exc
    return build(Path(output_root), baseline=baseline, seed=seed, n_resamples=n_resamples)


def add_report_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``janus-ray report OUTPUT_ROOT [--baseline FOLDER] [--resamples N] [--seed S]``."""
    parser = subparsers.add_parser("report", help="HTML / markdown / CSV report comparing the folders of a scored run")
    parser.add_argument("output_root", help="output root of an eval run (the directory holding summary.csv)")
    parser.add_argument("--baseline", help="folder to compare every other folder with (default: first by name)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples per CI (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.set_defaults(func=cmd_report)
    return parser


def cmd_report(args: argparse.Namespace) -> int:
    """The subcommand: build the report and print where its files are."""
    if args.resamples < 1:
        raise ConfigError(f"--resamples must be at least 1, got {args.resamples}.")
    paths = build_report(Path(args.output_root), args.baseline, args.seed, args.resamples)
    for path in paths:
        print(f"[janus-ray] report: {path}", file=sys.stderr)
    return 0

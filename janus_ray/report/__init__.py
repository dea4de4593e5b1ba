"""``janus-ray report``: statistics, charts and image grids comparing the variant folders of a run.

Importing this package is cheap: scipy and matplotlib (the ``report`` extra) load only when a
report is built, so the CLI can register the subcommand without them.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from janus_ray.errors import ConfigError

__all__ = ["add_report_subcommand", "build_report", "preload"]


def preload() -> None:
    """Import what ``build_report`` needs (scipy.stats, matplotlib: ~2 CPU seconds) ahead of it.

    ``janus-ray eval`` calls this in a background thread while Ray starts, so that the report at
    the end does not wait for the imports. Raises ImportError without the ``report`` extra."""
    import janus_ray.report.build  # noqa: F401


def build_report(
    output_root: Path | Sequence[Path],
    baseline: str | None = None,
    seed: int = 0,
    n_resamples: int = 9999,
    out_dir: Path | None = None,
) -> list[Path]:
    """Write ``report.html``, ``report.md``, ``comparison.csv`` and ``comparison.json``; return their paths.

    Args:
        output_root: an eval run's output root (its ``run.json`` lists the run's folders; an older
            root without one: its sub-directories holding results, with a StaleDiscoveryWarning),
            or a list of result folders (directories holding ``janus_eval_scores.parquet``).
        baseline: folder name every other folder is compared with (default: the first, sorted by
            name, that has a row).
        seed: seed of the Monte Carlo sign-flip test (used above 16 untied prompts; same seed, same p).
        n_resamples: random sign patterns of that Monte Carlo test.
        out_dir: where the files go (default: the output root, or the folders' common parent).

    Statistics (see janus_ray.report.stats): the unit is the prompt; 95% Student-t intervals;
    paired sign-flip permutation test of the mean difference, Holm-corrected. ``report.html`` is
    self-contained (no JavaScript); thumbnails are JPEG, at most 160 px long side, quality 70, and
    the whole file is capped at 15 MB.

    Raises:
        InputError: no result folder, or no score; run.json lists a folder without results.
        ConfigError: ``baseline`` is not a result folder; scipy / matplotlib are not installed.
    """
    try:
        from janus_ray.report.build import build
    except ImportError as exc:
        raise ConfigError(f"The report needs scipy and matplotlib: pip install 'janus-ray[report]' ({exc}).") from exc
    return build(output_root, baseline=baseline, seed=seed, n_resamples=n_resamples, out_dir=out_dir)


def add_report_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``janus-ray report PATH... [--baseline FOLDER] [--resamples N] [--seed S] [--out DIR]``."""
    parser = subparsers.add_parser("report", help="HTML / markdown / CSV report comparing the folders of a scored run")
    parser.add_argument(
        "paths", nargs="+", metavar="PATH",
        help="the output root of an eval run (its run.json lists the folders), or result folders "
             "(directories holding janus_eval_scores.parquet)",
    )
    parser.add_argument("--baseline", help="folder to compare every other folder with: its name or path (default: the first by "
                             "name that has a row)")
    parser.add_argument("--resamples", type=int, default=9999,
                        help="random sign patterns of the Monte Carlo sign-flip test, used above 16 untied prompts (default: 9999)")
    parser.add_argument("--seed", type=int, default=0, help="seed of that Monte Carlo test (default: 0)")
    parser.add_argument("--out", help="directory for the report files (default: the output root / the folders' common parent)")
    parser.set_defaults(func=cmd_report)
    return parser


def cmd_report(args: argparse.Namespace) -> int:
    """The subcommand: build the report and print where its files are (and why it guessed the folders)."""
    if args.resamples < 1:
        raise ConfigError(f"--resamples must be at least 1, got {args.resamples}.")
    paths = [Path(p) for p in args.paths]
    if args.out:  # before any statistics: an --out that cannot hold the files fails in one line
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a directory.")
        from janus_ray.results import ensure_writable_directory

        ensure_writable_directory(out, "--out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            written = build_report(paths[0] if len(paths) == 1 else paths, args.baseline, args.seed,
                                   args.resamples, Path(args.out) if args.out else None)
        except OSError as exc:  # e.g. report.html is a directory: one line, not a traceback
            raise ConfigError(f"Cannot write the report: {exc}.") from exc
    for message in dict.fromkeys(str(warning.message) for warning in caught):  # each once (one per chart)
        print(f"[janus-ray] warning: {message}", file=sys.stderr)
    for path in written:
        print(f"[janus-ray] report: {path}", file=sys.stderr)
    return 0

"""Reading a scored run: which result folders, their parquet tables, JSON meta, metric directions.

Which folders (``select``): one output root holding ``run.json`` (written by ``eval``) -> exactly
the folders that run scored, wherever they are; one output root without it (results of an older
janus-ray) -> its direct sub-directories holding ``janus_eval_scores.parquet``, with a warning
(stale folders of an earlier run are compared too); result folders given directly -> those.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from janus_ray.errors import ConfigError, InputError
from janus_ray.results import RESULT_STEM, RUN_RECORD, score_columns, unique_names  # noqa: F401 (re-exported)

NON_SCORE_COLUMNS = {"prompt_idx", "sample"}
NO_PROMPT = -1
PARQUET = f"{RESULT_STEM}.parquet"


@dataclass(frozen=True)
class Metric:
    """A reported score column, its metric name and direction."""

    column: str
    name: str
    higher_is_better: bool


@dataclass
class Folder:
    """One variant folder's scored table and where its images are.

    ``table`` has a ``prompt_key`` column (see ``prompt_keys``): the unit every statistic pairs on.
    """

    name: str
    table: pd.DataFrame
    meta: dict[str, Any]
    image_roots: list[Path] = field(default_factory=list)
    result_dir: Path | None = None

    def image_file(self, rel_path: str) -> Path | None:
        """The image on disk for a table's ``image_path`` (None when no root has it)."""
        for root in self.image_roots:
            candidate = root / rel_path
            if candidate.is_file():
                return candidate
        return None


@dataclass(frozen=True)
class Selection:
    """The result folders a report compares, and where that list came from."""

    result_dirs: list[Path]
    names: list[str]
    image_roots: dict[Path, list[Path]]  # result dir -> input folder(s) holding its images
    out_dir: Path  # where report.html & co. go
    source: str  # "run.json", "discovered" (no run.json: glob, may include stale folders) or "arguments"
    #: what the report names as its output root: the run's (run.json, discovered), or the result
    #: folders' common parent (arguments); ``out_dir`` only says where the files go
    root: Path


class StaleDiscoveryWarning(UserWarning):
    """An output root without run.json: the report falls back to globbing its sub-directories."""


def discover(output_root: Path) -> list[Path]:
    """The result folders directly under ``output_root``, sorted by name (the pre-run.json fallback)."""
    if not output_root.is_dir():
        raise InputError(f"Report: output root {output_root} is not a directory.")
    folders = sorted(p.parent for p in output_root.glob(f"*/{PARQUET}"))
    if not folders:
        raise InputError(
            f"Report: no {PARQUET} in any direct sub-directory of {output_root}; "
            "pass the output root of an eval run (the directory that holds summary.csv and run.json), "
            "or result folders."
        )
    return folders


def select(paths: Sequence[Path], out_dir: Path | None = None) -> Selection:
    """Which result folders to compare (see the module doc); ``out_dir`` overrides where the report goes.

    Raises:
        InputError: a path does not exist; run.json is unreadable or lists a folder without results;
            several paths and one of them is not a result folder.
    """
    paths = list(dict.fromkeys(Path(p).resolve() for p in paths))
    if not paths:
        raise InputError("Report: no output root or result folder given.")
    for path in paths:
        if not path.exists():
            raise InputError(f"Report: {path} does not exist.")
    if len(paths) == 1 and (paths[0] / RUN_RECORD).is_file():
        root = paths[0]
        dirs, roots = _from_run_record(root / RUN_RECORD)
        return Selection(dirs, unique_names(dirs), roots, Path(out_dir or root).resolve(), "run.json", root)
    if len(paths) == 1 and not (paths[0] / PARQUET).is_file():
        root = paths[0]
        dirs = discover(root)
        warnings.warn(
            f"Report: {root} has no {RUN_RECORD} (results of an older janus-ray?): comparing every direct "
            f"sub-directory holding {PARQUET}, which includes folders of earlier runs. Pass the result "
            "folders themselves to choose.",
            StaleDiscoveryWarning,
            stacklevel=2,
        )
        return Selection(dirs, unique_names(dirs), {}, Path(out_dir or root).resolve(), "discovered", root)
    missing = [str(p) for p in paths if not (p / PARQUET).is_file()]
    if missing:
        raise InputError(
            f"Report: {', '.join(missing)} hold(s) no {PARQUET}; pass result folders, or one output root."
        )
    default_out = Path(os.path.commonpath(paths)) if len(paths) > 1 else paths[0].parent
    if default_out in paths:  # a folder nested in another: write beside, not into, a result folder
        default_out = default_out.parent
    if out_dir is None:
        _warn_over_the_runs_report(default_out, paths)
    return Selection(paths, unique_names(paths), {}, Path(out_dir or default_out).resolve(), "arguments", default_out)


def _warn_over_the_runs_report(out: Path, chosen: list[Path]) -> None:
    """Some of a run's folders, reported into the run's output root by default, replace the run's own
    report of all its folders: say so (``--out`` keeps both)."""
    if not ((out / RUN_RECORD).is_file() and (out / "report.html").is_file()):
        return
    try:
        run_dirs, _ = _from_run_record(out / RUN_RECORD)
    except InputError:
        return
    if {d.resolve() for d in run_dirs} != set(chosen):
        warnings.warn(
            f"Report: replacing {out / 'report.html'} (and report.md, comparison.csv, comparison.json there), "
            f"the report of the run's {len(run_dirs)} folder(s), with a report of {len(chosen)} folder(s); "
            "pass --out DIR to keep the run's report.",
            stacklevel=3,
        )


def _from_run_record(record: Path) -> tuple[list[Path], dict[Path, list[Path]]]:
    try:
        document = json.loads(record.read_text(encoding="utf-8"))
        recorded_root = Path(document.get("output_root") or record.parent)
        # result folders under the recorded root are read beside run.json: a moved or copied
        # output root reports its own folders (not the original's, nor nothing)
        entries = [(_relocated(Path(f["results"]), recorded_root, record.parent.resolve()), Path(f["input"]))
                   for f in document["folders"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"Report: {record} is not a janus-ray run record ({type(exc).__name__}: {exc}).") from exc
    if not entries:
        raise InputError(f"Report: {record} lists no folder.")
    gone = [str(r) for r, _ in entries if not (r / PARQUET).is_file()]
    if gone:
        raise InputError(
            f"Report: {record} lists result folder(s) without {PARQUET}: {', '.join(gone)} "
            "(moved or deleted since the run?). Pass the result folders to compare instead."
        )
    return [r for r, _ in entries], {r: [i] for r, i in entries}


def _relocated(path: Path, recorded_root: Path, root: Path) -> Path:
    """``path`` under ``root`` where it was under ``recorded_root``; as recorded when outside it."""
    try:
        return root / path.relative_to(recorded_root)
    except ValueError:
        return path


def prompt_keys(table: pd.DataFrame) -> pd.Series:
    """The pairing key of each row: ``text:<prompt>`` (spaces collapsed and stripped, Unicode NFC:
    ``manifest.normal_prompt``, as eval matches prompts to the prompt list), else
    ``idx:<prompt_idx>``, else None.

    Pairing by the prompt's text works whatever the input convention numbered its prompts with (a
    sidecar or metadata folder may have no meaningful index); the index is the fallback only where
    the text is missing. Rows of the same key are samples of one prompt.
    """
    if "prompt" in table:
        text = table["prompt"].astype("string").str.normalize("NFC").str.replace(r"\s+", " ", regex=True).str.strip()
    else:
        text = pd.Series(pd.NA, index=table.index, dtype="string")
    has_text = (text.str.len() > 0).fillna(False).astype(bool)
    idx = table["prompt_idx"]
    keys = pd.Series(None, index=table.index, dtype=object)
    keys[has_text] = ("text:" + text[has_text]).astype(object)
    by_idx = ~has_text & (idx >= 0)
    keys[by_idx] = "idx:" + idx[by_idx].astype(str)
    return keys


def load_folder(result_dir: Path, name: str | None = None, image_roots: Sequence[Path] | None = None) -> Folder:
    """Read ``<result_dir>/janus_eval_scores.parquet`` and the meta of its JSON twin (if any)."""
    table = pd.read_parquet(result_dir / PARQUET)
    # A row without prompt index (image with no prompt) is never scored: -1 keeps it counted as failed.
    table["prompt_idx"] = table["prompt_idx"].fillna(NO_PROMPT).astype(np.int64)
    table["sample"] = table["sample"].fillna(0).astype(np.int64)
    table["prompt_key"] = prompt_keys(table)
    json_path = result_dir / f"{RESULT_STEM}.json"
    meta = json.loads(json_path.read_text(encoding="utf-8")).get("meta", {}) if json_path.is_file() else {}
    roots = list(image_roots or []) + _image_roots(result_dir, meta or {})
    return Folder(name or result_dir.name, table, meta or {}, list(dict.fromkeys(roots)), result_dir)


def _image_roots(result_dir: Path, meta: dict[str, Any]) -> list[Path]:
    """The input folder of the same name from meta.config.folders (for --output-dir), then the folder itself."""
    configured = [Path(f) for f in (meta.get("config") or {}).get("folders") or []]
    return [f for f in configured if f.name == result_dir.name] + [result_dir]


def load_selection(selection: Selection, baseline: str | None) -> tuple[list[Folder], str]:
    """Every selected folder, sorted by display name, and the baseline's name (default: the first)."""
    folders = sorted(
        (load_folder(d, n, selection.image_roots.get(d)) for d, n in zip(selection.result_dirs, selection.names)),
        key=lambda f: f.name,
    )
    names = [f.name for f in folders]
    if baseline is None:  # the first folder (by name) with a row, so that something pairs with it
        return folders, next((f.name for f in folders if len(f.table)), names[0])
    if baseline in names:
        return folders, baseline
    # a path, as users give folders everywhere else: the result folder, or the image folder it scored
    wanted = Path(baseline).expanduser().resolve()
    for result_dir, name in zip(selection.result_dirs, selection.names):
        if wanted in (Path(result_dir).resolve(), *(Path(r).resolve() for r in selection.image_roots.get(result_dir, []))):
            return folders, name
    raise ConfigError(f"Report: baseline {baseline!r} is not a result folder; folders: {', '.join(names)} "
                      "(give one of these names, or the path of a result folder or of the image folder it scored).")


def load_all(output_root: Path, baseline: str | None) -> tuple[list[Folder], str]:
    """Every folder of one output root (run.json, else discovered) and the baseline's name."""
    return load_selection(select([Path(output_root)]), baseline)


def metrics_of(folders: list[Folder]) -> list[Metric]:
    """The primary column of every metric with a score in some folder, in the results' column order.

    Direction comes from meta.metrics.<metric>.higher_is_better, else the scorer registry. Variant
    columns (PickScore_scaled ...) are rescalings of their metric's score and are left out, so the
    Holm family and the mean rank count each metric once. Without meta: every numeric column.
    """
    found: dict[str, Metric] = {}
    for folder in folders:
        entries = (folder.meta.get("metrics") or {}).items()
        for name, entry in entries:
            column = entry.get("column")
            if column and column not in found:
                hib = entry.get("higher_is_better")
                found[column] = Metric(column, name, registry_direction(name, column) if hib is None else bool(hib))
    if not found:
        for folder in folders:
            for column in folder.table.columns:
                if column not in NON_SCORE_COLUMNS and column not in found and pd.api.types.is_float_dtype(folder.table[column]):
                    found[column] = Metric(column, column, registry_direction(None, column))
    has_data = {c for c in found if any(c in f.table and f.table[c].notna().any() for f in folders)}
    return [found[c] for c in score_columns(list(found)) if c in has_data]


def registry_direction(name: str | None, column: str) -> bool:
    """higher_is_better of the registered scorer with this name or column (True when none matches).

    Imported lazily: only result files without meta need the registry (PIL, numpy; no torch).
    """
    try:
        from janus_ray.metrics import get_scorer_class, list_scorers
    except Exception:  # noqa: BLE001 - the report must work without the scoring stack
        return True
    for candidate in ([name] if name else []) + list_scorers():
        try:
            cls = get_scorer_class(candidate)
        except Exception:  # noqa: BLE001 - unknown name or a scorer module that fails to import
            continue
        if candidate == name or column in (cls.column, *cls.variant_columns.values()):
            return bool(cls.higher_is_better)
    return True

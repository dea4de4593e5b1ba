"""Reading a scored output root: the per-folder parquet tables, their JSON meta, metric directions.

The folders are the direct sub-directories of the output root holding ``janus_eval_scores.parquet``
(with ``--output-dir`` and when results were written into the input folders alike).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from janus_ray.errors import ConfigError, InputError
from janus_ray.results import RESULT_STEM, score_columns

NON_SCORE_COLUMNS = {"prompt_idx", "sample"}
NO_PROMPT = -1


@dataclass(frozen=True)
class Metric:
    """A reported score column, its metric name and direction."""

    column: str
    name: str
    higher_is_better: bool


@dataclass
class Folder:
    """One variant folder's scored table and where its images are."""

    name: str
    table: pd.DataFrame
    meta: dict[str, Any]
    image_roots: list[Path] = field(default_factory=list)

    def image_file(self, rel_path: str) -> Path | None:
        """The image on disk for a table's ``image_path`` (None when no root has it)."""
        for root in self.image_roots:
            candidate = root / rel_path
            if candidate.is_file():
                return candidate
        return None


def discover(output_root: Path) -> list[Path]:
    """The result folders under ``output_root``, sorted by name."""
    if not output_root.is_dir():
        raise InputError(f"Report: output root {output_root} is not a directory.")
    folders = sorted(p.parent for p in output_root.glob(f"*/{RESULT_STEM}.parquet"))
    if not folders:
        raise InputError(
            f"Report: no {RESULT_STEM}.parquet in any direct sub-directory of {output_root}; "
            "pass the output root of an eval run (the directory that holds summary.csv)."
        )
    return folders


def load_folder(result_dir: Path) -> Folder:
    """Read ``<result_dir>/janus_eval_scores.parquet`` and the meta of its JSON twin (if any)."""
    table = pd.read_parquet(result_dir / f"{RESULT_STEM}.parquet")
    # A row without prompt index (image with no prompt) is never scored: -1 keeps it counted as failed.
    table["prompt_idx"] = table["prompt_idx"].fillna(NO_PROMPT).astype(np.int64)
    table["sample"] = table["sample"].fillna(0).astype(np.int64)
    json_path = result_dir / f"{RESULT_STEM}.json"
    meta = json.loads(json_path.read_text(encoding="utf-8")).get("meta", {}) if json_path.is_file() else {}
    return Folder(result_dir.name, table, meta or {}, _image_roots(result_dir, meta or {}))


def _image_roots(result_dir: Path, meta: dict[str, Any]) -> list[Path]:
    """The input folder of the same name from meta.config.folders (for --output-dir), then the folder itself."""
    configured = [Path(f) for f in (meta.get("config") or {}).get("folders") or []]
    return [f for f in configured if f.name == result_dir.name] + [result_dir]


def load_all(output_root: Path, baseline: str | None) -> tuple[list[Folder], str]:
    """Every folder (sorted by name) and the baseline's name (default: the first)."""
    folders = [load_folder(d) for d in discover(output_root)]
    names = [f.name for f in folders]
    if baseline is None:
        return folders, names[0]
    if baseline not in names:
        raise ConfigError(f"Report: baseline {baseline!r} is not a result folder; folders: {', '.join(names)}.")
    return folders, baseline


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

    Imported lazily: the registry pulls in torch, needed only for result files without meta.
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

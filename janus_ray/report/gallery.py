"""Image grids of the report: prompts where the variants disagree most, lowest-scoring images.

Images are embedded as JPEG thumbnails (THUMB_PX px long side, quality THUMB_QUALITY) in data
URIs, within a byte budget: once it is spent, further cells say so instead of embedding.
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from janus_ray.images import open_image, to_rgb
from janus_ray.report.data import NO_PROMPT, Folder, Metric

THUMB_PX = 160
THUMB_QUALITY = 70
DISAGREE_ROWS = 12
LOWEST_PER_FOLDER = 6


class Thumbs:
    """Thumbnail data URIs of image files, cached per file, within a total byte budget."""

    def __init__(self, budget: int):
        self.budget = budget
        self.omitted = 0
        self._cache: dict[Path, tuple[str, int, int] | None] = {}

    def _encode(self, path: Path) -> tuple[str, int, int] | None:
        try:
            # As the scorers saw it: no EXIF transpose (see janus_ray.images).
            image = to_rgb(open_image(path))
        except (OSError, ValueError, Image.DecompressionBombError):
            return None
        image.thumbnail((THUMB_PX, THUMB_PX))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=THUMB_QUALITY)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), *image.size

    def html(self, path: Path | None, alt: str) -> str:
        """An ``<img>`` of the file, or a placeholder saying why there is none."""
        if path is None:
            return '<div class="noimg">image file not found</div>'
        if path not in self._cache:
            encoded = self._encode(path)
            if encoded is not None and len(encoded[0]) > self.budget:
                self.omitted += 1
                return '<div class="noimg">not embedded (report size cap)</div>'
            if encoded is not None:
                self.budget -= len(encoded[0])
            self._cache[path] = encoded
        encoded = self._cache[path]
        if encoded is None:
            return '<div class="noimg">unreadable image</div>'
        uri, width, height = encoded
        return f'<img src="{uri}" width="{width}" height="{height}" alt="{escape(alt)}">'


def _fmt(value: float) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.4f}"


def standardized(folders: list[Folder], metrics: list[Metric]) -> dict[str, pd.DataFrame]:
    """Per folder: every row's scores as z-scores pooled over all folders, sign flipped so higher = better.

    z-scores make metrics of different scales comparable when combined into one number.
    """
    out = {f.name: pd.DataFrame(index=f.table.index) for f in folders}
    for metric in metrics:
        pooled = pd.concat([f.table[metric.column] for f in folders if metric.column in f.table])
        mean, sd = pooled.mean(), pooled.std(ddof=0)
        sign = 1.0 if metric.higher_is_better else -1.0
        for f in folders:
            values = f.table[metric.column] if metric.column in f.table else pd.Series(np.nan, index=f.table.index)
            out[f.name][metric.column] = sign * (values - mean) / (sd if sd > 0 else 1.0)
    return out


def disagreement(folders: list[Folder], metrics: list[Metric], z: dict[str, pd.DataFrame]) -> pd.Series:
    """Per prompt: the spread (std) of the folders' per-prompt z-scores, averaged over metrics.

    Only prompts scored in at least two folders count; sorted, largest first.
    """
    spreads = []
    for metric in metrics:
        per_folder = {
            f.name: z[f.name][metric.column].groupby(f.table["prompt_key"], dropna=True).mean() for f in folders
        }
        frame = pd.DataFrame(per_folder)
        spreads.append(frame.std(axis=1, ddof=0).where(frame.notna().sum(axis=1) >= 2))
    if not spreads:
        return pd.Series(dtype=float)
    return pd.concat(spreads, axis=1).mean(axis=1).dropna().sort_values(ascending=False, kind="stable")


def _scores_html(row: pd.Series, metrics: list[Metric], best: dict[str, float] | None = None) -> str:
    lines = []
    for m in metrics:
        value = row.get(m.column, np.nan)
        mark = best is not None and not np.isnan(value) and value == best.get(m.column)
        text = f"{escape(m.column)} {_fmt(value)}"
        lines.append(f"<b>{text}</b>" if mark else text)
    return "<br>".join(lines)


def _first_sample(folder: Folder, key: str) -> pd.Series | None:
    """The first sample of the prompt with this pairing key (data.prompt_keys) in ``folder``."""
    rows = folder.table[folder.table["prompt_key"] == key]
    return None if rows.empty else rows.sort_values("sample", kind="stable").iloc[0]


def _prompt_label(picks: dict[str, pd.Series | None]) -> tuple[str, str]:
    """(index text, prompt text) of a paired prompt, from the first folder that has it."""
    for row in picks.values():
        if row is not None:
            idx = f"#{row['prompt_idx']}" if row["prompt_idx"] != NO_PROMPT else ""
            return idx, row["prompt"] if isinstance(row["prompt"], str) else ""
    return "", ""


def disagreement_grid(folders: list[Folder], metrics: list[Metric], thumbs: Thumbs, rows: int = DISAGREE_ROWS) -> str:
    """The ``rows`` prompts where the variants disagree most: every folder's (first-sample) image and scores."""
    z = standardized(folders, metrics)
    top = disagreement(folders, metrics, z).head(rows)
    if top.empty:
        return "<p>No prompt was scored in two folders.</p>"
    head = "".join(f"<th>{escape(f.name)}</th>" for f in folders)
    body = []
    for key, spread in top.items():
        picks = {f.name: _first_sample(f, key) for f in folders}
        best = _row_best([r for r in picks.values() if r is not None], metrics)
        idx, text = _prompt_label(picks)
        cells = [
            f'<td class="prompt"><span class="idx">{idx}</span> {escape(text)}'
            f'<br><span class="small">spread {spread:.2f} z</span></td>'
        ]
        for f in folders:
            row = picks[f.name]
            if row is None:
                cells.append('<td><div class="noimg">not in this folder</div></td>')
                continue
            image = thumbs.html(f.image_file(row["image_path"]), f"{f.name}, prompt {idx}")
            cells.append(f'<td>{image}<div class="scores">{_scores_html(row, metrics, best)}</div></td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table class="grid"><tr><th>prompt</th>{head}</tr>{"".join(body)}</table></div>'


def _row_best(rows: list[pd.Series], metrics: list[Metric]) -> dict[str, float]:
    best = {}
    for m in metrics:
        values = [r.get(m.column, np.nan) for r in rows]
        values = [v for v in values if not np.isnan(v)]
        if values:
            best[m.column] = max(values) if m.higher_is_better else min(values)
    return best


def lowest_grid(folders: list[Folder], metrics: list[Metric], thumbs: Thumbs, per_folder: int = LOWEST_PER_FOLDER) -> str:
    """Per folder, the ``per_folder`` images with the lowest combined score (mean direction-adjusted z)."""
    z = standardized(folders, metrics)
    body = []
    for f in folders:
        combined = z[f.name].mean(axis=1, skipna=True).dropna().sort_values(kind="stable").head(per_folder)
        cells = []
        for index, score in combined.items():
            row = f.table.loc[index]
            prompt = row["prompt"] if isinstance(row["prompt"], str) else ""
            image = thumbs.html(f.image_file(row["image_path"]), f"{f.name}, prompt {row['prompt_idx']}")
            cells.append(
                f'<td>{image}<div class="prompt small"><span class="idx">#{row["prompt_idx"]}</span> {escape(prompt)}</div>'
                f'<div class="scores">combined {score:+.2f} z<br>{_scores_html(row, metrics)}</div></td>'
            )
        cells = cells or ['<td><div class="noimg">no scored image</div></td>']
        body.append(f'<tr><th>{escape(f.name)}</th>{"".join(cells)}</tr>')
    return f'<div class="scroll"><table class="grid">{"".join(body)}</table></div>'

"""The report's charts as PNG bytes: matplotlib's Agg canvas on a bare Figure (no pyplot state)."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 96
BAR = "#7a9cc6"
BASE = "#e0a458"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # A folder name in a script the font lacks (CJK in DejaVu Sans) made matplotlib warn once per
    # character and chart (8 lines for one name): said once here; the HTML tables show the names.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    missing = sorted({chr(int(m.group(1))) for w in caught if (m := _MISSING_GLYPH.search(str(w.message)))}
                     - _GLYPHS_REPORTED)  # said once per process: eval's report draws several charts
    _GLYPHS_REPORTED.update(missing)
    for w in caught:
        if not _MISSING_GLYPH.search(str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        warnings.warn(f"a chart's labels use {len(missing)} character(s) its font has no glyph for "
                      f"({''.join(missing[:12])}{' ...' if len(missing) > 12 else ''}); they show as boxes "
                      "there, the report's tables show them", stacklevel=2)
    return buffer.getvalue()


_GLYPHS_REPORTED: set[str] = set()
#: matplotlib's warning for a character its font lacks: "Glyph 26085 (\\N{CJK ...}) missing from font(s) ..."
_MISSING_GLYPH = re.compile(r"Glyph (\d+) \(.+?\) missing from font")


def _style(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))  # few ticks: long decimals must not collide
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)


def _labels(names: Sequence[str]) -> list[str]:
    return [n.replace("$", r"\$") for n in names]  # a '$' would start matplotlib mathtext


def _direction(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"


def bar_chart(
    title: str,
    names: Sequence[str],
    means: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    baseline: str,
    higher_is_better: bool,
) -> bytes:
    """Horizontal bars of the folders' means with 95% CI whiskers; the baseline's bar highlighted.

    The value axis is zoomed to the CIs: variants usually differ by far less than the scores'
    distance from 0, and a zero-based axis would hide every difference.
    """
    means, lows, highs = (np.asarray(a, dtype=float) for a in (means, lows, highs))
    fig = Figure(figsize=(4.2, 0.42 * len(names) + 1.1))
    ax = fig.add_subplot()
    y = np.arange(len(names))[::-1]
    errors = np.nan_to_num(np.vstack([means - lows, highs - means]))
    colors = [BASE if n == baseline else BAR for n in names]
    ax.barh(y, np.nan_to_num(means), xerr=errors, color=colors, capsize=3, ecolor="#333333")
    ax.set_yticks(y, labels=_labels(names), fontsize=8)
    finite = np.concatenate([lows, highs, means])
    finite = finite[np.isfinite(finite)]
    if len(finite):
        pad = max(finite.max() - finite.min(), abs(finite.max()) * 1e-3, 1e-9) * 0.25
        ax.set_xlim(finite.min() - pad, finite.max() + pad)
    ax.set_title(f"{_labels([title])[0]} ({_direction(higher_is_better)})", fontsize=10)
    ax.set_xlabel("mean over prompts with 95% t-CI (axis zoomed to the CIs)", fontsize=8)
    _style(ax)
    return _png(fig)


def distribution(title: str, names: Sequence[str], samples: Sequence[np.ndarray], higher_is_better: bool) -> bytes:
    """Horizontal box plots (mean marked) of every folder's scores for one metric."""
    fig = Figure(figsize=(4.2, 0.42 * len(names) + 1.1))
    ax = fig.add_subplot()
    data = [np.asarray(s, dtype=float)[~np.isnan(np.asarray(s, dtype=float))] for s in samples][::-1]
    style = {"showmeans": True, "widths": 0.6, "flierprops": {"markersize": 3}}
    try:  # matplotlib >= 3.10 spells it orientation=; older versions only know vert=
        ax.boxplot(data, orientation="horizontal", **style)
    except TypeError:
        ax.boxplot(data, vert=False, **style)
    ax.set_yticks(np.arange(1, len(names) + 1), labels=_labels(names)[::-1], fontsize=8)
    ax.set_title(f"{_labels([title])[0]} ({_direction(higher_is_better)})", fontsize=10)
    ax.set_xlabel("score per image (box: quartiles, triangle: mean)", fontsize=8)
    _style(ax)
    return _png(fig)

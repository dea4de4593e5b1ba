"""Build the report of a scored output root: comparison.csv, report.md and a self-contained report.html.

``report.html`` has no JavaScript and no external resource: CSS inline, charts (PNG) and image
thumbnails (JPEG, at most 160 px long side, quality 70) as base64 data URIs. The file is capped at
MAX_HTML_BYTES (15 MB): the grids have a fixed number of rows and stop embedding images once the
byte budget is spent.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from janus_ray import __version__
from janus_ray.report import gallery, plots
from janus_ray.report.data import Folder, Metric, load_all, metrics_of
from janus_ray.report.stats import holm, paired_compare, rank_means, summarize
from janus_ray.errors import InputError
from janus_ray.results import atomic_write

ALPHA = 0.05
MAX_HTML_BYTES = 15_000_000
#: bytes kept free for the grids' markup (per cell) when sizing the thumbnail budget
_CELL_MARKUP = 2_000

COLUMNS = [
    "folder", "metric", "column", "higher_is_better", "baseline",
    "n_images", "n_scored", "n_failed", "mean", "std", "ci_low", "ci_high", "n_resamples", "seed",
    "rank", "mean_rank",
    "n_prompts_paired", "n_pairs", "n_unmatched", "mean_diff", "diff_ci_low", "diff_ci_high",
    "win_rate", "tie_rate", "loss_rate", "wilcoxon_p", "holm_p", "significant", "verdict",
]


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------
def _values(folder: Folder, metric: Metric) -> np.ndarray:
    if metric.column not in folder.table:
        return np.full(len(folder.table), np.nan)
    return folder.table[metric.column].to_numpy(dtype=float, na_value=np.nan)


def _keys(folder: Folder) -> list[tuple[int, int]]:
    return list(zip(folder.table["prompt_idx"].tolist(), folder.table["sample"].tolist()))


def _verdict(diff: float, p_holm: float, higher_is_better: bool) -> str:
    if np.isnan(p_holm):
        return "no paired data"
    if p_holm >= ALPHA:
        return "not significant"
    return "significantly better" if (diff > 0) == higher_is_better else "significantly worse"


def compare(folders: list[Folder], metrics: list[Metric], baseline: str, seed: int = 0, n_resamples: int = 2000) -> pd.DataFrame:
    """One row per folder x metric (COLUMNS): summary, paired test against the baseline, Holm, ranks."""
    base = next(f for f in folders if f.name == baseline)
    rows = []
    for folder in folders:
        for metric in metrics:
            values = _values(folder, metric)
            summary = summarize(values, folder.table["prompt_idx"].to_numpy(), n_resamples, seed)
            row = {
                "folder": folder.name, "metric": metric.name, "column": metric.column,
                "higher_is_better": metric.higher_is_better, "baseline": baseline,
                **summary.__dict__, "n_resamples": n_resamples, "seed": seed,
            }
            if folder.name != baseline:
                paired = paired_compare(
                    _keys(folder), values, _keys(base), _values(base, metric),
                    metric.higher_is_better, n_resamples, seed,
                )
                row.update(
                    n_prompts_paired=paired.n_prompts, n_pairs=paired.n_pairs, n_unmatched=paired.n_unmatched,
                    mean_diff=paired.mean_diff, diff_ci_low=paired.ci_low, diff_ci_high=paired.ci_high,
                    win_rate=paired.win_rate, tie_rate=paired.tie_rate, loss_rate=paired.loss_rate,
                    wilcoxon_p=paired.p_value,
                )
            rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    for column in ("n_prompts_paired", "n_pairs", "n_unmatched"):  # counts stay integers next to the baseline's blanks
        table[column] = table[column].astype("Int64")
    table["holm_p"] = holm(table["wilcoxon_p"].to_numpy(dtype=float))
    paired_rows = table["folder"] != baseline
    table["significant"] = [bool(p < ALPHA) if tested else None for p, tested in zip(table["holm_p"], paired_rows)]
    table["verdict"] = [
        _verdict(d, p, hib) if tested else "baseline"
        for d, p, hib, tested in zip(table["mean_diff"], table["holm_p"], table["higher_is_better"], paired_rows)
    ]
    for metric in metrics:
        mine = table["column"] == metric.column
        table.loc[mine, "rank"] = rank_means(table.loc[mine, "mean"], metric.higher_is_better)
    table["mean_rank"] = table.groupby("folder", sort=False)["rank"].transform("mean")
    return table


# ---------------------------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------------------------
def _num(value: float, fmt: str = ".4f") -> str:
    return "–" if value is None or pd.isna(value) else format(value, fmt)


def _p(value: float) -> str:
    if value is None or pd.isna(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _arrow(metric: Metric) -> str:
    return "↑" if metric.higher_is_better else "↓"


def _cells(table: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    return {(r["folder"], r["column"]): r for _, r in table.iterrows()}


def _mean_ranks(table: pd.DataFrame) -> dict[str, float]:
    return table.groupby("folder", sort=False)["mean_rank"].first().to_dict()


def _paired_text(r: pd.Series) -> str:
    unmatched = f", {int(r['n_unmatched'])} unmatched" if r["n_unmatched"] else ""
    return (
        f"{_num(r['mean_diff'], '+.4f')} [{_num(r['diff_ci_low'], '+.4f')}, {_num(r['diff_ci_high'], '+.4f')}], "
        f"win {_num(r['win_rate'], '.0%')} tie {_num(r['tie_rate'], '.0%')}, p {_p(r['wilcoxon_p'])}, "
        f"p_holm {_p(r['holm_p'])}{unmatched}"
    )


# ---------------------------------------------------------------------------------------------
# Markdown and CSV
# ---------------------------------------------------------------------------------------------
def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


def render_markdown(table: pd.DataFrame, folders: list[Folder], metrics: list[Metric], baseline: str) -> str:
    """The report's tables as GitHub markdown (for terminals and pull requests)."""
    cells, ranks = _cells(table), _mean_ranks(table)
    names = [f.name for f in folders]
    head = [f"{m.column} {_arrow(m)}" for m in metrics]
    n_resamples, seed = int(table["n_resamples"].iloc[0]), int(table["seed"].iloc[0])

    def per_folder(text: Callable[[pd.Series], str], who: list[str]) -> list[list[str]]:
        return [[n, *(text(cells[(n, m.column)]) for m in metrics)] for n in who]

    summary = per_folder(lambda r: f"{_num(r['mean'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}]", names)
    for row in summary:
        row.append(_num(ranks[row[0]], ".2f"))
    counts = per_folder(lambda r: f"sd {_num(r['std'])}, {r['n_scored']} scored, {r['n_failed']} failed", names)
    paired = per_folder(lambda r: f"{_paired_text(r)} → **{r['verdict']}**", [n for n in names if n != baseline])
    ranks_rows = per_folder(lambda r: _num(r["rank"], "g"), names)
    for row in ranks_rows:
        row.append(_num(ranks[row[0]], ".2f"))
    return "\n\n".join(
        [
            "# janus-ray report",
            f"Baseline: `{baseline}`. 95% percentile-bootstrap CIs ({n_resamples} resamples of the prompts, "
            f"seed {seed}); paired tests: Wilcoxon signed-rank on per-prompt differences, Holm-corrected over "
            f"all {int(table['wilcoxon_p'].notna().sum())} folder x metric tests, significant when p_holm < {ALPHA}.",
            "## Mean [95% CI]",
            _md_table(["folder", *head, "mean rank"], summary),
            "## Spread and counts",
            _md_table(["folder", *head], counts),
            f"## Paired difference vs `{baseline}` (folder − baseline)",
            _md_table(["folder", *head], paired) if paired else "_Only one folder: nothing to compare._",
            "## Rank per metric (1 = best)",
            _md_table(["folder", *head, "mean rank"], ranks_rows),
        ]
    ) + "\n"


def render_csv(table: pd.DataFrame) -> str:
    """comparison.csv: one row per folder x metric, every number of the report."""
    return table.to_csv(index=False, lineterminator="\n")


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px;color:#222;font-size:14px}
h1{margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0} th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;white-space:nowrap}
.small,.ci{font-size:11px;color:#666} .v{font-weight:600} .best{background:#eef6ee}
.sig-better{background:#d8f0d8} .sig-worse{background:#f6d6d6} .ns{color:#777}
.verdict{font-weight:600;font-size:12px} .charts{display:flex;flex-wrap:wrap;gap:12px}
.charts img{border:1px solid #eee} .scroll{overflow-x:auto}
table.grid td,table.grid th{min-width:164px;max-width:176px;font-size:11px;overflow-wrap:anywhere}
table.grid td.prompt{min-width:200px;max-width:220px;font-size:12px} table.grid th{font-size:12px}
table.grid img{display:block;margin-bottom:4px}
.noimg{width:160px;height:60px;background:#f0f0f0;color:#888;font-size:11px;display:flex;align-items:center;justify-content:center;text-align:center}
.idx{color:#888} .scores{color:#444;line-height:1.35} footer{margin-top:40px;font-size:12px;color:#666}
"""


def _png_img(data: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" alt="{escape(alt)}">'


def _scroll(content: str) -> str:
    return f'<div class="scroll">{content}</div>'


def _th_metrics(metrics: list[Metric]) -> str:
    return "".join(f"<th>{escape(m.column)} {_arrow(m)}</th>" for m in metrics)


def summary_html(table: pd.DataFrame, folders: list[Folder], metrics: list[Metric]) -> str:
    cells, ranks = _cells(table), _mean_ranks(table)
    rows = []
    for f in folders:
        tds = []
        for m in metrics:
            r = cells[(f.name, m.column)]
            css = ' class="num best"' if r["rank"] == 1 else ' class="num"'
            tds.append(
                f'<td{css}><div class="v">{_num(r["mean"])}</div>'
                f'<div class="ci">[{_num(r["ci_low"])}, {_num(r["ci_high"])}]</div>'
                f'<div class="small">sd {_num(r["std"])} · n {r["n_scored"]} · failed {r["n_failed"]}</div></td>'
            )
        rows.append(f'<tr><th>{escape(f.name)}</th>{"".join(tds)}<td class="num">{_num(ranks[f.name], ".2f")}</td></tr>')
    return _scroll(f'<table id="summary"><tr><th>folder</th>{_th_metrics(metrics)}<th>mean rank</th></tr>{"".join(rows)}</table>')


def paired_html(table: pd.DataFrame, folders: list[Folder], metrics: list[Metric], baseline: str) -> str:
    cells = _cells(table)
    rows = []
    for f in folders:
        if f.name == baseline:
            continue
        tds = []
        for m in metrics:
            r = cells[(f.name, m.column)]
            css = {"significantly better": "sig-better", "significantly worse": "sig-worse"}.get(r["verdict"], "ns")
            unmatched = f' · {int(r["n_unmatched"])} unmatched' if r["n_unmatched"] else ""
            tds.append(
                f'<td class="num {css}"><div class="v">{_num(r["mean_diff"], "+.4f")}</div>'
                f'<div class="ci">[{_num(r["diff_ci_low"], "+.4f")}, {_num(r["diff_ci_high"], "+.4f")}]</div>'
                f'<div class="small">win {_num(r["win_rate"], ".0%")} · tie {_num(r["tie_rate"], ".0%")}</div>'
                f'<div class="small">n {int(r["n_prompts_paired"])}{unmatched}</div>'
                f'<div class="small">p {_p(r["wilcoxon_p"])} · p<sub>Holm</sub> {_p(r["holm_p"])}</div>'
                f'<div class="verdict">{escape(r["verdict"])}</div></td>'
            )
        rows.append(f'<tr><th>{escape(f.name)}</th>{"".join(tds)}</tr>')
    if not rows:
        return "<p>Only one folder: nothing to compare.</p>"
    return _scroll(f'<table id="paired"><tr><th>folder</th>{_th_metrics(metrics)}</tr>{"".join(rows)}</table>')


def ranks_html(table: pd.DataFrame, folders: list[Folder], metrics: list[Metric]) -> str:
    cells, ranks = _cells(table), _mean_ranks(table)
    order = sorted(folders, key=lambda f: (np.nan_to_num(ranks[f.name], nan=np.inf), f.name))
    rows = [
        f'<tr><th>{escape(f.name)}</th>'
        + "".join(f'<td class="num">{_num(cells[(f.name, m.column)]["rank"], "g")}</td>' for m in metrics)
        + f'<td class="num"><b>{_num(ranks[f.name], ".2f")}</b></td></tr>'
        for f in order
    ]
    return _scroll(f'<table id="ranks"><tr><th>folder</th>{_th_metrics(metrics)}<th>mean rank</th></tr>{"".join(rows)}</table>')


def charts_html(table: pd.DataFrame, folders: list[Folder], metrics: list[Metric], baseline: str) -> tuple[str, str]:
    """(bar charts with CI whiskers, score distributions), one PNG per metric each."""
    cells = _cells(table)
    names = [f.name for f in folders]
    bars, boxes = [], []
    for m in metrics:
        rows = [cells[(n, m.column)] for n in names]
        bars.append(_png_img(plots.bar_chart(
            m.column, names, [r["mean"] for r in rows], [r["ci_low"] for r in rows], [r["ci_high"] for r in rows],
            baseline, m.higher_is_better), f"{m.column}: means with 95% CI"))
        samples = [f.table[m.column].to_numpy(dtype=float, na_value=np.nan) if m.column in f.table else np.zeros(0) for f in folders]
        boxes.append(_png_img(plots.distribution(m.column, names, samples, m.higher_is_better), f"{m.column}: distribution"))
    return f'<div class="charts">{"".join(bars)}</div>', f'<div class="charts">{"".join(boxes)}</div>'


def render_html(output_root: Path, table: pd.DataFrame, folders: list[Folder], metrics: list[Metric], baseline: str) -> str:
    """The whole self-contained page (see the module docstring for its size cap)."""
    bars, boxes = charts_html(table, folders, metrics, baseline)
    sections = [
        ("Mean per folder and metric, with 95% CI", summary_html(table, folders, metrics)
         + '<p class="small">Green: best mean of the metric. ↑ higher is better, ↓ lower is better.</p>'),
        ("Means with 95% CI", bars),
        (f"Paired difference vs baseline {baseline} (folder − baseline)", paired_html(table, folders, metrics, baseline)
         + f'<p class="small">Green / red: significantly better / worse than the baseline (Holm-corrected p &lt; {ALPHA}); '
           "grey: not significant. Win / tie: share of prompts where the folder is better / equal.</p>"),
        ("Rank per metric (1 = best) and mean rank", ranks_html(table, folders, metrics)),
        ("Score distributions", boxes),
    ]
    n_cells = len(folders) * (gallery.DISAGREE_ROWS + gallery.LOWEST_PER_FOLDER + 1)
    skeleton = _page(output_root, table, folders, metrics, baseline, sections, omitted=0)
    thumbs = gallery.Thumbs(MAX_HTML_BYTES - len(skeleton.encode()) - _CELL_MARKUP * n_cells)
    sections += [
        ("Prompts where the variants disagree most",
         '<p class="small">Spread: the folders\' per-prompt scores as z-scores (pooled per metric), their standard '
         "deviation across folders, averaged over metrics. First sample of each prompt; bold: best of the row.</p>"
         + gallery.disagreement_grid(folders, metrics, thumbs)),
        ("Lowest-scoring images per folder",
         '<p class="small">Combined score: mean over metrics of the direction-adjusted z-score.</p>'
         + gallery.lowest_grid(folders, metrics, thumbs)),
    ]
    page = _page(output_root, table, folders, metrics, baseline, sections, thumbs.omitted)
    if len(page.encode()) > MAX_HTML_BYTES:  # markup estimate exceeded: keep the numbers, drop the images
        page = _page(output_root, table, folders, metrics, baseline, sections[:-2], omitted=-1)
    return page


def _page(output_root, table, folders, metrics, baseline, sections, omitted: int) -> str:
    n_resamples, seed = int(table["n_resamples"].iloc[0]), int(table["seed"].iloc[0])
    n_tests = int(table["wilcoxon_p"].notna().sum())
    body = "".join(f"<h2>{escape(title)}</h2>{content}" for title, content in sections)
    dropped = {-1: " Image grids left out: the report would exceed the size cap.", 0: ""}.get(
        omitted, f" {omitted} image(s) not embedded to stay under the cap.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>janus-ray report</title><style>{CSS}</style></head>
<body><h1>janus-ray report</h1>
<p>Output root: <code>{escape(str(output_root))}</code> · {len(folders)} folder(s) · baseline <b>{escape(baseline)}</b> ·
metrics: {escape(", ".join(f"{m.column} ({m.name})" for m in metrics))}</p>
<p class="small">95% percentile-bootstrap CIs of the mean, resampling prompts ({n_resamples} resamples, seed {seed}).
Paired comparisons match (prompt, sample); prompts scored in only one of the two folders are left out and counted as
unmatched. Wilcoxon signed-rank test on per-prompt differences, Holm correction over all {n_tests} folder × metric tests.</p>
{body}
<footer>janus-ray {escape(__version__)} · Self-contained file, no JavaScript. Thumbnails: JPEG, at most
{gallery.THUMB_PX} px on the long side, quality {gallery.THUMB_QUALITY}; at most {gallery.DISAGREE_ROWS} disagreement rows
and {gallery.LOWEST_PER_FOLDER} lowest images per folder; the file is capped at {MAX_HTML_BYTES / 1e6:.0f} MB.{dropped}
All numbers: comparison.csv.</footer>
</body></html>
"""


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def build(output_root: Path, baseline: str | None = None, seed: int = 0, n_resamples: int = 2000) -> list[Path]:
    """Write report.html, report.md and comparison.csv at ``output_root``; return their paths."""
    output_root = Path(output_root).resolve()
    folders, baseline = load_all(output_root, baseline)
    metrics = metrics_of(folders)
    if not metrics:
        raise InputError(f"Report: no folder under {output_root} has any score to report.")
    table = compare(folders, metrics, baseline, seed, n_resamples)
    paths = [output_root / "report.html", output_root / "report.md", output_root / "comparison.csv"]
    atomic_write(paths[0], render_html(output_root, table, folders, metrics, baseline).encode("utf-8"))
    atomic_write(paths[1], render_markdown(table, folders, metrics, baseline).encode("utf-8"))
    atomic_write(paths[2], render_csv(table).encode("utf-8"))
    return paths

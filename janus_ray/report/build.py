"""Build the report of a scored run: comparison.csv (+ comparison.json: methods, versions), report.md, report.html.

``report.html`` has no JavaScript and no external resource: CSS inline, charts (PNG) and image
thumbnails (JPEG, at most 160 px long side, quality 70) as base64 data URIs. The file is capped at
MAX_HTML_BYTES (15 MB): the grids have a fixed number of rows and stop embedding images once the
byte budget is spent.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from janus_ray import __version__
from janus_ray.report import gallery, plots
from janus_ray.report.data import Folder, Metric, Selection, load_selection, metrics_of, select
from janus_ray.report.stats import (
    EXACT_MAX_N, LEVEL, TIE_ATOL, TIE_RTOL, WILCOXON_EXACT_MAX_N, WILCOXON_ZERO_METHOD,
    common_keys, holm, paired_differences, paired_from_differences, prompt_means, rank_means, signflip_many, summarize, t_crit,
)
from janus_ray.errors import InputError
from janus_ray.results import atomic_write

ALPHA = 0.05
DEFAULT_RESAMPLES = 9999
MAX_HTML_BYTES = 15_000_000
#: bytes kept free for the grids' markup (per cell) when sizing the thumbnail budget
_CELL_MARKUP = 2_000

COLUMNS = [
    "folder", "metric", "column", "higher_is_better", "baseline",
    "n_images", "n_scored", "n_failed", "n_prompts", "mean", "std", "ci_low", "ci_high", "ci_note",
    "n_resamples", "seed",
    "n_prompts_shared", "mean_shared", "rank", "mean_rank", "mean_rank_note",
    "n_prompts_paired", "n_pairs", "n_unmatched", "n_untied", "mean_diff", "diff_sd",
    "diff_ci_low", "diff_ci_high", "diff_ci_low_simultaneous", "diff_ci_high_simultaneous", "effect_size_dz",
    "win_rate", "tie_rate", "loss_rate", "p_value", "p_method", "min_p", "holm_p", "significant", "verdict",
    "note", "wilcoxon_p",
]


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------
def _values(folder: Folder, metric: Metric) -> np.ndarray:
    if metric.column not in folder.table:
        return np.full(len(folder.table), np.nan)
    return folder.table[metric.column].to_numpy(dtype=float, na_value=np.nan)


def computed(folder: Folder, metric: Metric) -> bool:
    """Whether ``folder``'s run scored ``metric``. Result files carry every metric's column (the
    earlier tool's schema), NaN where a metric was not run, so the column alone does not say: the
    JSON meta lists the metrics the run scored; without meta, any value in the column counts."""
    listed = folder.meta.get("metrics") if isinstance(folder.meta, dict) else None
    if isinstance(listed, dict) and listed:
        for entry in listed.values():
            if isinstance(entry, dict) and (entry.get("column") == metric.column
                                            or metric.column in (entry.get("columns") or {}).values()):
                return True
        return False
    return metric.column in folder.table and bool(folder.table[metric.column].notna().any())


NOT_COMPUTED = "not computed"


def _counts(r: Any) -> str:
    """A summary row's counts for the tables: sd, prompts, scored, failed; or that it was not run."""
    if str(r["ci_note"]).startswith(NOT_COMPUTED):
        return NOT_COMPUTED
    return f"sd {_num(r['std'])}, {r['n_prompts']} prompts, {r['n_scored']} scored, {r['n_failed']} failed"


def _keys(folder: Folder) -> np.ndarray:
    """The pairing unit of each row: its prompt, as the integer code ``_add_prompt_codes`` gave it (-1: none)."""
    return folder.table["prompt_code"].to_numpy()


def _add_prompt_codes(folders: list[Folder]) -> None:
    """Code every folder's ``prompt_key`` (data.prompt_keys) as an int64 on one shared vocabulary.

    Hashing the texts once (pandas.factorize) keeps the per-prompt grouping, pairing and ranking
    on integer arrays, which matters at a million rows; the same text gets the same code everywhere.
    """
    keys = pd.concat([f.table["prompt_key"].astype(object) for f in folders], ignore_index=True)
    codes, _ = pd.factorize(keys, use_na_sentinel=True)
    start = 0
    for f in folders:
        f.table["prompt_code"] = codes[start:start + len(f.table)].astype(np.int64)
        start += len(f.table)


def _aligned(pending: dict[int, tuple[np.ndarray, np.ndarray, int]]) -> np.ndarray:
    """Every comparison's differences as one column on the union of their prompts (0 where unpaired)."""
    if not pending:
        return np.zeros((0, 0))
    all_keys = [keys for keys, _, _ in pending.values()]
    if all(np.issubdtype(k.dtype, np.integer) for k in all_keys):  # prompt codes: one row per code
        rows = [k for k in all_keys]
        n_rows = 1 + max((int(k.max()) for k in all_keys if len(k)), default=-1)
    else:
        union = np.unique(np.concatenate([k.astype(str) for k in all_keys]))
        rows = [np.searchsorted(union, k.astype(str)) for k in all_keys]
        n_rows = len(union)
    matrix = np.zeros((n_rows, len(pending)))
    for j, (row, (_, diffs, _)) in enumerate(zip(rows, pending.values())):
        matrix[row, j] = diffs
    return matrix


def _verdict(diff: float, p_holm: float, higher_is_better: bool, significant: bool) -> str:
    if np.isnan(p_holm):
        return "no paired data"
    if not significant:
        return "not significant"
    return "significantly better" if (diff > 0) == higher_is_better else "significantly worse"


def compare(
    folders: list[Folder], metrics: list[Metric], baseline: str, seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES
) -> pd.DataFrame:
    """One row per folder x metric (COLUMNS): summary, paired test against the baseline, Holm, ranks.

    Unit: the prompt (rows are averaged per prompt before anything else). ``significant``: the
    Holm-adjusted sign-flip p < ALPHA *and* the (unadjusted) t-interval of the mean difference
    excludes 0 on the same side, so the verdict never contradicts the interval printed beside it.
    """
    _add_prompt_codes(folders)
    base = next(f for f in folders if f.name == baseline)
    pending = {}  # row number -> (per-prompt keys, differences, unmatched), tested once all are known
    rows = []
    for folder in folders:
        for metric in metrics:
            values = _values(folder, metric)
            summary = summarize(values, _keys(folder))
            if not computed(folder, metric):  # never run on this folder: nothing failed, nothing to show
                summary = dataclasses.replace(summary, n_failed=0,
                                              ci_note=f"{NOT_COMPUTED}: {metric.column} was not scored for this folder")
            rows.append({
                "folder": folder.name, "metric": metric.name, "column": metric.column,
                "higher_is_better": metric.higher_is_better, "baseline": baseline,
                **summary.__dict__, "n_resamples": n_resamples, "seed": seed,
            })
            if folder.name != baseline:
                pending[len(rows) - 1] = paired_differences(_keys(folder), values, _keys(base), _values(base, metric))
    tests = dict(zip(pending, signflip_many(_aligned(pending), n_resamples, seed)))
    for i, (_, diffs, n_unmatched) in pending.items():
        paired = paired_from_differences(
            diffs, n_unmatched, rows[i]["higher_is_better"], n_resamples, seed, test=tests[i]
        )
        rows[i].update(
            n_prompts_paired=paired.n_pairs, n_pairs=paired.n_pairs, n_unmatched=paired.n_unmatched,
            n_untied=paired.n_untied, mean_diff=paired.mean_diff, diff_sd=paired.sd_diff,
            diff_ci_low=paired.ci_low, diff_ci_high=paired.ci_high, effect_size_dz=paired.effect_size_dz,
            win_rate=paired.win_rate, tie_rate=paired.tie_rate, loss_rate=paired.loss_rate,
            p_value=paired.p_value, p_method=paired.p_method, min_p=paired.min_p,
            wilcoxon_p=paired.wilcoxon_p, note=paired.ci_note,
        )
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    for column in ("n_prompts_paired", "n_pairs", "n_unmatched", "n_untied"):  # integers next to the baseline's blanks
        table[column] = table[column].astype("Int64")
    for column in ("ci_note", "note", "p_method", "mean_rank_note"):
        table[column] = table[column].astype(object).where(table[column].notna(), "")
    table["holm_p"] = holm(table["p_value"].to_numpy(dtype=float))
    _simultaneous(table)
    _significance(table, table["folder"] != baseline)
    _ranks(table, folders, metrics)
    return table


def _simultaneous(table: pd.DataFrame) -> None:
    """Bonferroni t-intervals at level 1 - (1 - LEVEL) / m over the m tests: all cover together with >= 95%."""
    m = int(table["p_value"].notna().sum())
    n = table["n_pairs"].to_numpy(dtype=float, na_value=np.nan)
    ok = n >= 2
    half = np.full(len(table), np.nan)
    if m:
        half[ok] = t_crit(1 - (1 - LEVEL) / m, n[ok] - 1) * table["diff_sd"].to_numpy(dtype=float)[ok] / np.sqrt(n[ok])
    table["diff_ci_low_simultaneous"] = table["mean_diff"] - half
    table["diff_ci_high_simultaneous"] = table["mean_diff"] + half


def _significance(table: pd.DataFrame, tested: pd.Series) -> None:
    holm_p, diff = table["holm_p"].to_numpy(dtype=float), table["mean_diff"].to_numpy(dtype=float)
    low, high = table["diff_ci_low"].to_numpy(dtype=float), table["diff_ci_high"].to_numpy(dtype=float)
    excludes = ((diff > 0) & (low > 0)) | ((diff < 0) & (high < 0))
    reject = holm_p < ALPHA  # NaN compares False
    significant, notes = [], []
    for i, is_tested in enumerate(tested):
        note = table.at[i, "note"]
        if not is_tested:
            significant.append(None)
            notes.append(note)
            continue
        extra = []
        min_p = table.at[i, "min_p"]
        if not pd.isna(min_p) and min_p >= ALPHA:
            why = ("n too small for the test" if table.at[i, "p_method"] != "monte-carlo" else "too few resamples") + (
                f": with {table.at[i, 'n_untied']} untied prompt(s) the smallest possible p is {min_p:.3g} >= {ALPHA}")
            extra.append(why)
        if reject[i] and not excludes[i]:
            extra.append("Holm p < 0.05 but the t-interval includes 0 (permutation and t reference differ at the margin): not marked significant")
        significant.append(bool(reject[i] and excludes[i]))
        notes.append("; ".join([n for n in [note, *extra] if n]))
    table["significant"] = significant
    table["note"] = notes
    table["verdict"] = [
        _verdict(d, p, hib, bool(sig)) if t else "baseline"
        for d, p, hib, sig, t in zip(diff, holm_p, table["higher_is_better"], significant, tested)
    ]


def _ranks(table: pd.DataFrame, folders: list[Folder], metrics: list[Metric]) -> None:
    """``rank``: per metric among the folders with a score for it, on the prompts they all share;
    ``mean_rank``: over metrics, among the folders with a score for every metric, each metric on
    the prompts those all share. A folder lacking a metric gets no mean rank (``mean_rank_note``)."""
    means = {}
    for f in folders:
        for m in metrics:
            keys, per_prompt = prompt_means(_values(f, m), _keys(f))
            means[(f.name, m.column)] = pd.Series(per_prompt, index=keys, dtype=float)
    row_of = {(f, c): i for i, (f, c) in enumerate(zip(table["folder"], table["column"]))}

    def shared_means(names: list[str], column: str) -> tuple[dict[str, float], int]:
        if not names:
            return {}, 0
        keys = functools.reduce(
            lambda a, b: a[common_keys(a, b)[0]], (means[(n, column)].index.to_numpy() for n in names)
        )
        return {n: float(means[(n, column)].loc[keys].mean()) if len(keys) else float("nan") for n in names}, len(keys)

    for m in metrics:
        having = [f.name for f in folders if len(means[(f.name, m.column)])]
        values, n_shared = shared_means(having, m.column)
        ranks = rank_means([values[n] for n in having], m.higher_is_better)
        for name, rank in zip(having, ranks):
            i = row_of[(name, m.column)]
            table.at[i, "n_prompts_shared"], table.at[i, "mean_shared"], table.at[i, "rank"] = n_shared, values[name], rank
    complete = [f.name for f in folders if all(len(means[(f.name, m.column)]) for m in metrics)]
    per_folder: dict[str, list[float]] = {n: [] for n in complete}
    empty: list[str] = []
    for m in metrics:
        values, n_shared = shared_means(complete, m.column)
        if complete and n_shared == 0:
            empty.append(m.column)
        for name, rank in zip(complete, rank_means([values[n] for n in complete], m.higher_is_better)):
            per_folder[name].append(rank)
    for f in folders:
        lacking = [m.column for m in metrics if not len(means[(f.name, m.column)])]
        if lacking:
            value, note = np.nan, f"no mean rank: no score for {', '.join(lacking)}"
        elif empty:
            value, note = np.nan, f"no mean rank: no prompt scored by every folder on {', '.join(empty)}"
        else:
            value, note = float(np.mean(per_folder[f.name])) if metrics else np.nan, ""
        for m in metrics:
            i = row_of[(f.name, m.column)]
            table.at[i, "mean_rank"], table.at[i, "mean_rank_note"] = value, note
    table["n_prompts_shared"] = table["n_prompts_shared"].astype("Int64")


def methods(table: pd.DataFrame, selection: Selection | None = None) -> dict:
    """comparison.json: how every number of comparison.csv was computed, with the library versions."""
    import numpy
    import scipy

    return {
        "janus_ray_version": __version__,
        "versions": {"scipy": scipy.__version__, "numpy": numpy.__version__, "pandas": pd.__version__},
        "unit": "prompt: each folder's scores are averaged per prompt, then folders are paired prompt by prompt",
        "pairing_key": "prompt text (stripped); prompt_idx only where the text is missing",
        "alpha": ALPHA,
        "level": LEVEL,
        "interval": "Student-t interval of the mean of per-prompt values (summary) / differences (paired); "
                    "none below 2 prompts; unadjusted for multiplicity",
        "simultaneous_interval": "Bonferroni t-interval at level 1 - (1 - level) / m over the m paired tests",
        "test": {
            "name": "two-sided paired sign-flip permutation test of the mean per-prompt difference",
            "exact_max_untied_prompts": EXACT_MAX_N,
            "monte_carlo": {"n_resamples": int(table["n_resamples"].iloc[0]), "seed": int(table["seed"].iloc[0]),
                            "p": "(1 + #{as extreme}) / (1 + n_resamples)"},
        },
        "correction": {"method": "holm", "family": "every folder x metric test of the report",
                       "m": int(table["p_value"].notna().sum())},
        "significant": "holm_p < alpha and the unadjusted t-interval excludes 0 on the side of mean_diff",
        "ties": {"rule": "|d| <= atol + rtol * max(|a|, |b|) on per-prompt means a, b counts as d = 0",
                 "atol": TIE_ATOL, "rtol": TIE_RTOL},
        "effect_size": "Cohen's d_z = mean_diff / diff_sd (sd of the per-prompt differences, ddof=1)",
        "rank": "per metric among the folders with a score for it, on the prompts they all share; "
                "mean_rank only for folders with every metric",
        "wilcoxon": {"role": "extra column, not used for any verdict", "zero_method": WILCOXON_ZERO_METHOD,
                     "correction": False, "alternative": "two-sided",
                     "method": f"exact when <= {WILCOXON_EXACT_MAX_N} nonzero differences with distinct magnitudes, else asymptotic"},
        "folders": (
            [{"name": n, "results": str(d)} for n, d in zip(selection.names, selection.result_dirs)] if selection else []
        ),
        "folders_from": selection.source if selection else None,
    }


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
    note = f" ({r['note']})" if r["note"] else ""
    return (
        f"{_num(r['mean_diff'], '+.4f')} [{_num(r['diff_ci_low'], '+.4f')}, {_num(r['diff_ci_high'], '+.4f')}], "
        f"d_z {_num(r['effect_size_dz'], '+.2f')}, win {_num(r['win_rate'], '.0%')} tie {_num(r['tie_rate'], '.0%')}, "
        f"n {_int(r['n_pairs'])}{unmatched}, p {_p(r['p_value'])}, p_holm {_p(r['holm_p'])}, "
        f"Wilcoxon p {_p(r['wilcoxon_p'])}{note}"
    )


def _int(value) -> str:
    return "–" if value is None or pd.isna(value) else str(int(value))


def _ci(r: pd.Series, low: str = "ci_low", high: str = "ci_high", fmt: str = ".4f") -> str:
    if pd.isna(r[low]):
        return "[no CI: n < 2]"
    return f"[{_num(r[low], fmt)}, {_num(r[high], fmt)}]"


def methods_text(table: pd.DataFrame) -> str:
    """The methods paragraph shared by report.md and report.html (plain text)."""
    n_resamples, seed = int(table["n_resamples"].iloc[0]), int(table["seed"].iloc[0])
    m = int(table["p_value"].notna().sum())
    text = (
        f"Unit: the prompt (each folder's images are averaged per prompt; folders are paired by prompt text). "
        f"Intervals: {LEVEL:.0%} Student-t CIs of the mean over prompts, none below 2 prompts; they are "
        f"unadjusted, while the verdict is Holm-adjusted (simultaneous Bonferroni intervals: comparison.csv). "
        f"Test: two-sided paired sign-flip permutation test of the mean per-prompt difference (exact up to "
        f"{EXACT_MAX_N} untied prompts, else {n_resamples} random sign patterns, seed {seed}); Holm correction "
        f"over all {m} folder x metric tests; significant when p_holm < {ALPHA} and the CI excludes 0. "
        f"Differences within {TIE_ATOL:g} + {TIE_RTOL:g} x |score| count as ties. d_z: mean difference / sd "
        f"of the per-prompt differences. Wilcoxon signed-rank p: an extra, not used for the verdict."
    )
    if m and m / (1 + n_resamples) >= ALPHA:
        text += (f" Warning: with {n_resamples} resamples and {m} tests no Monte Carlo p can pass Holm at "
                 f"{ALPHA}; raise --resamples.")
    return text


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

    def per_folder(text: Callable[[pd.Series], str], who: list[str]) -> list[list[str]]:
        return [[n, *(text(cells[(n, m.column)]) for m in metrics)] for n in who]

    summary = per_folder(lambda r: f"{_num(r['mean'])} {_ci(r)}", names)
    for row in summary:
        row.append(_num(ranks[row[0]], ".2f"))
    counts = per_folder(_counts, names)
    paired = per_folder(lambda r: f"{_paired_text(r)} → **{r['verdict']}**", [n for n in names if n != baseline])
    ranks_rows = per_folder(lambda r: _num(r["rank"], "g"), names)
    for row in ranks_rows:
        row.append(_num(ranks[row[0]], ".2f"))
    rank_notes = _rank_notes(table)
    return "\n\n".join(
        [
            "# janus-ray report",
            f"Baseline: `{baseline}`. {methods_text(table)}",
            f"## Mean [{LEVEL:.0%} CI] over prompts",
            _md_table(["folder", *head, "mean rank"], summary),
            "## Spread and counts",
            _md_table(["folder", *head], counts),
            f"## Paired difference vs `{baseline}` (folder − baseline), per prompt; CIs unadjusted, verdict Holm-adjusted",
            _md_table(["folder", *head], paired) if paired else "_Only one folder: nothing to compare._",
            "## Rank per metric (1 = best, on the prompts every folder shares)",
            _md_table(["folder", *head, "mean rank"], ranks_rows) + ("\n\n" + rank_notes if rank_notes else ""),
        ]
    ) + "\n"


def _rank_notes(table: pd.DataFrame) -> str:
    notes = table.groupby("folder", sort=False)["mean_rank_note"].first()
    return "\n".join(f"- {name}: {note}" for name, note in notes.items() if note)


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
                f'<div class="ci">{escape(_ci(r))}</div>'
                f'<div class="small">{escape(_counts(r)).replace(", ", " · ")}</div></td>'
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
                f'<div class="ci">{escape(_ci(r, "diff_ci_low", "diff_ci_high", "+.4f"))} <span title="unadjusted">(unadj.)</span></div>'
                f'<div class="small">d<sub>z</sub> {_num(r["effect_size_dz"], "+.2f")} · win {_num(r["win_rate"], ".0%")} · tie {_num(r["tie_rate"], ".0%")}</div>'
                f'<div class="small">n {_int(r["n_pairs"])} prompts{unmatched}</div>'
                f'<div class="small">p {_p(r["p_value"])} · p<sub>Holm</sub> {_p(r["holm_p"])}</div>'
                f'<div class="small">Wilcoxon p {_p(r["wilcoxon_p"])} (extra)</div>'
                f'<div class="verdict">{escape(r["verdict"])}</div>'
                + (f'<div class="small note">{escape(r["note"])}</div>' if r["note"] else "") + "</td>"
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
        ("Mean over prompts per folder and metric, with 95% t-CI", summary_html(table, folders, metrics)
         + '<p class="small">Green: rank 1 of the metric on the prompts every ranked folder shares (the '
           'ranking below); the mean shown is over each folder\'s own prompts, so with prompts missing in '
           'some folder a green cell need not hold the largest mean. ↑ higher is better, ↓ lower is better.</p>'),
        ("Means with 95% CI", bars),
        (f"Paired difference vs baseline {baseline} (folder − baseline, per prompt)", paired_html(table, folders, metrics, baseline)
         + f'<p class="small">Green / red: significantly better / worse than the baseline (Holm-corrected sign-flip p &lt; {ALPHA} '
           "and the CI excludes 0); grey: not significant. The intervals are unadjusted 95% t-intervals, the verdict is "
           "Holm-adjusted: an interval may exclude 0 next to “not significant”. d<sub>z</sub>: mean difference / sd of the "
           "per-prompt differences. Win / tie: share of prompts where the folder is better / equal (within the tie tolerance).</p>"),
        ("Rank per metric (1 = best, on the prompts every ranked folder shares) and mean rank", ranks_html(table, folders, metrics)
         + "".join(f'<p class="small">{escape(line[2:])}</p>' for line in _rank_notes(table).splitlines())),
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
    source = {"run.json": "the run record run.json", "arguments": "the command line",
              "discovered": "a scan of the output root's sub-directories (no run.json: earlier runs' folders are included too)"
              }.get(table.attrs.get("folders_from", ""), "the caller")
    body = "".join(f"<h2>{escape(title)}</h2>{content}" for title, content in sections)
    dropped = {-1: " Image grids left out: the report would exceed the size cap.", 0: ""}.get(
        omitted, f" {omitted} image(s) not embedded to stay under the cap.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>janus-ray report</title><style>{CSS}</style></head>
<body><h1>janus-ray report</h1>
<p>Output root: <code>{escape(str(output_root))}</code> · {len(folders)} folder(s) · baseline <b>{escape(baseline)}</b> ·
metrics: {escape(", ".join(f"{m.column} ({m.name})" for m in metrics))}</p>
<p class="small">Folders from {escape(source)}. {escape(methods_text(table))}</p>
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
def build(
    paths: Path | Sequence[Path],
    baseline: str | None = None,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    out_dir: Path | None = None,
) -> list[Path]:
    """Write report.html, report.md, comparison.csv and comparison.json; return their paths.

    ``paths``: one output root (its run.json says which folders; without one, its sub-directories
    holding results, with a StaleDiscoveryWarning) or result folders. The files go to ``out_dir``,
    default the output root, or the result folders' common parent.
    """
    selection = select([paths] if isinstance(paths, (str, Path)) else list(paths), out_dir)
    folders, baseline = load_selection(selection, baseline)
    metrics = metrics_of(folders)
    if not metrics:
        raise InputError(f"Report: no folder of {', '.join(map(str, selection.result_dirs))} has any score to report.")
    table = compare(folders, metrics, baseline, seed, n_resamples)
    table.attrs["folders_from"] = selection.source
    out = selection.out_dir
    paths_out = [out / "report.html", out / "report.md", out / "comparison.csv", out / "comparison.json"]
    atomic_write(paths_out[0], render_html(selection.root, table, folders, metrics, baseline).encode("utf-8"))
    atomic_write(paths_out[1], render_markdown(table, folders, metrics, baseline).encode("utf-8"))
    atomic_write(paths_out[2], render_csv(table).encode("utf-8"))
    document = json.dumps(methods(table, selection), indent=2, ensure_ascii=False) + "\n"
    atomic_write(paths_out[3], document.encode("utf-8"))
    return paths_out

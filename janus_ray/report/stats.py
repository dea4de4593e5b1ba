"""The report's statistics: plain numpy/scipy functions on arrays, no pandas, no I/O.

* ``summarize``: mean, standard deviation, counts and a percentile-bootstrap 95% CI of the mean
  that resamples *prompts* (all samples of a drawn prompt come along), with a fixed seed;
* ``paired_compare``: a folder against the baseline on the (prompt, sample) keys both scored;
  differences are averaged per prompt, then mean difference + paired bootstrap CI, win / tie /
  loss rates, Wilcoxon signed-rank p-value;
* ``holm``: Holm's step-down adjustment of a family of p-values;
* ``rank_means``: ranks of the folders' means in a metric's direction.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

LEVEL = 0.95
#: resample matrices are drawn in chunks of at most this many indices (bounded memory)
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Summary:
    """One folder x metric: counts, mean, sample standard deviation, bootstrap CI of the mean."""

    n_images: int
    n_scored: int
    n_failed: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Paired:
    """One folder x metric against the baseline (difference = folder - baseline)."""

    n_prompts: int  # prompts with at least one matched (prompt, sample) pair
    n_pairs: int  # matched (prompt, sample) pairs
    n_unmatched: int  # keys scored in exactly one of the two folders, left out
    mean_diff: float
    ci_low: float
    ci_high: float
    win_rate: float  # share of prompts where the folder is better (in the metric's direction)
    tie_rate: float
    loss_rate: float
    p_value: float  # Wilcoxon signed-rank, two-sided, on the per-prompt differences


def _group_sums(values: np.ndarray, groups: Sequence[Hashable] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-group sums and counts (each value its own group when ``groups`` is None)."""
    if groups is None:
        return values, np.ones(len(values))
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    return np.bincount(inverse, weights=values), np.bincount(inverse).astype(float)


def bootstrap_mean_ci(
    values: Sequence[float],
    groups: Sequence[Hashable] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of ``values``, resampling whole groups (prompts).

    The statistic of a resample is sum / count over the drawn groups, so groups with several
    samples weigh by their size, as in the plain mean. NaN when empty; (v, v) for one group.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    sums, counts = _group_sums(values, groups)
    n = len(sums)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n)
    stats = []
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        stats.append(sums[idx].sum(axis=1) / counts[idx].sum(axis=1))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.concatenate(stats), [tail, 100 - tail])
    return float(low), float(high)


def summarize(
    values: Sequence[float],
    groups: Sequence[Hashable] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Summary:
    """Counts over all rows; mean, std (ddof=1) and CI over the rows that have a score (not NaN)."""
    values = np.asarray(values, dtype=float)
    scored = ~np.isnan(values)
    kept = values[scored]
    kept_groups = None if groups is None else np.asarray(groups)[scored]
    low, high = bootstrap_mean_ci(kept, kept_groups, n_resamples, seed)
    return Summary(
        n_images=len(values),
        n_scored=int(scored.sum()),
        n_failed=int((~scored).sum()),
        mean=float(kept.mean()) if len(kept) else float("nan"),
        std=float(kept.std(ddof=1)) if len(kept) > 1 else float("nan"),
        ci_low=low,
        ci_high=high,
    )


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value (scipy defaults); 1.0 when every difference is 0.

    scipy cannot rank an all-zero sample; "no difference at all" is exactly p = 1. NaN when empty.
    """
    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) == 0:
        return float("nan")
    if not np.any(diffs):
        return 1.0
    return float(scipy.stats.wilcoxon(diffs).pvalue)


def _scored(keys: Sequence[tuple[Hashable, Hashable]], values: Sequence[float]) -> dict:
    return {tuple(k): float(v) for k, v in zip(keys, values) if not np.isnan(v)}


def paired_compare(
    keys: Sequence[tuple[Hashable, Hashable]],
    values: Sequence[float],
    base_keys: Sequence[tuple[Hashable, Hashable]],
    base_values: Sequence[float],
    higher_is_better: bool = True,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Paired:
    """Compare a folder with the baseline on the (prompt, sample) keys both have a score for.

    Keys scored on one side only (missing prompt, failed image) are left out and counted in
    ``n_unmatched``. Differences are averaged per prompt first, so every prompt counts once in
    the mean, the bootstrap, the win rate and the Wilcoxon test.
    """
    mine, base = _scored(keys, values), _scored(base_keys, base_values)
    common = sorted(mine.keys() & base.keys())
    n_unmatched = len(mine.keys() ^ base.keys())
    prompt_diffs = _per_prompt([k[0] for k in common], [mine[k] - base[k] for k in common])
    n = len(prompt_diffs)
    low, high = bootstrap_mean_ci(prompt_diffs, None, n_resamples, seed)
    better = prompt_diffs if higher_is_better else -prompt_diffs
    rate = (lambda mask: float(mask.mean())) if n else (lambda mask: float("nan"))
    return Paired(
        n_prompts=n,
        n_pairs=len(common),
        n_unmatched=n_unmatched,
        mean_diff=float(prompt_diffs.mean()) if n else float("nan"),
        ci_low=low,
        ci_high=high,
        win_rate=rate(better > 0),
        tie_rate=rate(better == 0),
        loss_rate=rate(better < 0),
        p_value=wilcoxon_p(prompt_diffs),
    )


def _per_prompt(prompts: list[Hashable], diffs: list[float]) -> np.ndarray:
    """Mean difference per prompt (one value per prompt, in sorted prompt order)."""
    if not diffs:
        return np.zeros(0)
    sums, counts = _group_sums(np.asarray(diffs, dtype=float), prompts)
    return sums / counts


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values in the input order; NaN entries stay NaN and are not in the family.

    Sorted ascending, p_(i) becomes max_{j<=i} min(1, (m - j) * p_(j)) for j = 0..m-1.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = ~np.isnan(p)
    q = p[valid]
    m = len(q)
    order = np.argsort(q, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
    result = np.empty(m)
    result[order] = adjusted
    out[valid] = result
    return out


def rank_means(means: Sequence[float], higher_is_better: bool = True) -> np.ndarray:
    """Rank 1 = best; ties share the average rank; NaN means get no rank (NaN)."""
    means = np.asarray(means, dtype=float)
    ranks = np.full(means.shape, np.nan)
    valid = ~np.isnan(means)
    ranks[valid] = scipy.stats.rankdata(-means[valid] if higher_is_better else means[valid], method="average")
    return ranks

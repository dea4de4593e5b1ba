"""The report's statistics: plain numpy/scipy functions on arrays, no pandas, no I/O.

The unit of every interval and test is the **prompt**: a folder's scores are first averaged per
prompt (``prompt_means``), then folders are paired prompt by prompt.

* ``summarize``: counts over images; mean, sd and a Student-t 95% CI over the per-prompt means;
* ``paired_compare``: a folder against the baseline on the prompts both scored. Per-prompt
  differences within ``tie_tolerance`` of zero count as ties (exactly 0). Reported: mean difference,
  its Student-t 95% CI (unadjusted), Cohen's d_z, win / tie / loss rates, the p-value of a two-sided
  paired **sign-flip permutation test of the mean difference** (the quantity shown; exact over all
  2^n sign patterns up to EXACT_MAX_N untied prompts, else Monte Carlo with a fixed seed), and,
  as an extra not used for any verdict, the Wilcoxon signed-rank p-value;
* ``holm``: Holm's step-down adjustment of a family of p-values;
* ``rank_means``: ranks of the folders' means in a metric's direction.

Why these: the percentile bootstrap of a mean under-covers badly at small n (about 74% at n = 3);
the t-interval is exact for normal differences and close otherwise (see the coverage test). The
sign-flip test of the mean is the t-test's permutation counterpart (the mean and the t statistic
order the sign patterns identically), so it tests the same quantity as ``mean_diff`` without a
normality assumption; Wilcoxon tests a median-like centre and can disagree with the mean.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

LEVEL = 0.95
#: up to this many untied prompts the sign-flip test enumerates all 2^n patterns (exact p)
EXACT_MAX_N = 16
#: a per-prompt difference d of scores a, b is a tie when |d| <= TIE_ATOL + TIE_RTOL * max(|a|, |b|).
#: TIE_ATOL: the result CSVs write 6 decimals, so scores that print alike differ by less than 1e-6;
#: TIE_RTOL: float32 model outputs carry about 1e-7 relative noise, with headroom for accumulation.
TIE_ATOL = 1e-6
TIE_RTOL = 1e-6
#: the methods passed to scipy.stats.wilcoxon, explicitly (scipy 1.15 changed what "auto" picks)
WILCOXON_ZERO_METHOD = "wilcox"
WILCOXON_EXACT_MAX_N = 50
#: sign matrices are drawn in chunks of at most this many cells (bounded memory)
_CHUNK_CELLS = 4_000_000
#: relative slack when comparing a permuted statistic with the observed one (float summation order);
#: the same as scipy.stats.permutation_test uses
_CMP_EPS = 100 * np.finfo(float).eps


@dataclass(frozen=True)
class Summary:
    """One folder x metric: image counts; mean, sd and t-CI over the per-prompt means."""

    n_images: int
    n_scored: int
    n_failed: int
    n_prompts: int  # prompts with at least one scored image: the n of mean, std and the CI
    mean: float
    std: float  # sample sd (ddof=1) of the per-prompt means
    ci_low: float
    ci_high: float
    ci_note: str  # why there is no interval, or why it has zero width ("" otherwise)


@dataclass(frozen=True)
class Paired:
    """One folder x metric against the baseline (difference = folder - baseline), per prompt."""

    n_pairs: int  # prompts scored in both folders: the n of every number below
    n_unmatched: int  # prompts scored in exactly one of the two folders, left out
    n_untied: int  # paired prompts whose difference is not a tie
    mean_diff: float
    sd_diff: float  # sample sd (ddof=1) of the per-prompt differences
    ci_low: float  # Student-t interval of the mean difference, unadjusted for multiplicity
    ci_high: float
    ci_note: str
    effect_size_dz: float  # Cohen's d_z = mean_diff / sd_diff
    win_rate: float  # share of prompts where the folder is better (in the metric's direction)
    tie_rate: float
    loss_rate: float
    p_value: float  # sign-flip permutation test of the mean difference, two-sided
    p_method: str  # "exact" (all 2^n patterns), "monte-carlo" or "none"
    min_p: float  # the smallest p the test can give with these untied prompts (2 / 2^n_untied exact)
    wilcoxon_p: float  # extra: Wilcoxon signed-rank, two-sided; not used for the verdict


# ---------------------------------------------------------------------------------------------
# Per-prompt aggregation
# ---------------------------------------------------------------------------------------------
def prompt_means(values: Sequence[float], groups: Sequence[Hashable] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(prompt keys, mean score per prompt) over the rows with a score, keys sorted.

    Object keys (prompt texts) come back as ``str``.

    Rows whose value is NaN (failed) or whose group is None / NaN / a negative integer (no prompt)
    are left out; a prompt none of whose rows has a score does not appear. ``groups`` None: every row is its own
    prompt (keys 0..n-1).
    """
    values = np.asarray(values, dtype=float)
    keys = np.arange(len(values)) if groups is None else np.asarray(groups)
    if keys.dtype.kind not in "iu":  # texts, or a mix with None / NaN: compare as objects
        keys = np.asarray(groups, dtype=object)
    keep = ~np.isnan(values) & ~_missing(keys)
    if not keep.any():
        return np.zeros(0, dtype=object), np.zeros(0)
    if np.issubdtype(keys.dtype, np.integer):  # codes 0..V-1: group by counting, no sort
        sums = np.bincount(keys[keep], weights=values[keep])
        counts = np.bincount(keys[keep])
        present = np.flatnonzero(counts)
        return present, sums[present] / counts[present]
    kept = keys[keep].astype(str) if keys.dtype == object else keys[keep]
    unique, inverse = np.unique(kept, return_inverse=True)
    sums = np.bincount(inverse, weights=values[keep], minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    return unique, sums / counts


def common_keys(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (i, j) with a[i] == b[j], for two sorted arrays of unique keys (binary search, no sort)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pos = np.minimum(np.searchsorted(b, a), len(b) - 1)
    i = np.flatnonzero(b[pos] == a)
    return i, pos[i]


def _missing(keys: np.ndarray) -> np.ndarray:
    """None or NaN keys (elementwise; NaN is the one value unequal to itself); negative integer codes."""
    if np.issubdtype(keys.dtype, np.integer):
        return keys < 0
    if keys.dtype != object:
        return np.zeros(len(keys), dtype=bool)
    return np.asarray(np.equal(keys, None) | np.not_equal(keys, keys), dtype=bool)


# ---------------------------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------------------------
def t_crit(level: float, df: np.ndarray | float) -> np.ndarray | float:
    """Two-sided Student-t critical value: the (1 + level) / 2 quantile with ``df`` degrees of freedom."""
    return scipy.stats.t.ppf(0.5 + level / 2, df)


def t_interval(values: np.ndarray, level: float = LEVEL, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Student-t CI of the mean along ``axis``: mean -/+ t_{n-1} * sd / sqrt(n). NaN below n = 2.

    Vectorised: ``values`` of shape (..., n) gives intervals of shape (...). Exact coverage for
    normal data at every n >= 2 (the same interval as scipy.stats.ttest_1samp(...).confidence_interval).
    """
    values = np.asarray(values, dtype=float)
    n = values.shape[axis]
    mean = values.mean(axis=axis) if n else np.full(np.delete(values.shape, axis % values.ndim), np.nan)
    if n < 2:
        nan = np.full(np.shape(mean), np.nan)
        return nan, nan
    half = t_crit(level, n - 1) * values.std(axis=axis, ddof=1) / np.sqrt(n)
    return mean - half, mean + half


def _interval(values: np.ndarray, what: str, level: float = LEVEL) -> tuple[float, float, str]:
    """(low, high, note) for one 1-D sample: the t-interval, or NaN with the reason."""
    n = len(values)
    if n < 2:
        return float("nan"), float("nan"), f"no interval: {n} {what} (an interval needs at least 2)"
    if np.ptp(values) == 0:  # sd 0: the t-interval is the point itself (exactly, without rounding noise)
        return float(values[0]), float(values[0]), f"zero-width interval: all {n} {what} are equal"
    low, high = t_interval(values, level)
    return float(low), float(high), ""


def summarize(values: Sequence[float], groups: Sequence[Hashable] | None = None, level: float = LEVEL) -> Summary:
    """Counts over all rows; mean, sd (ddof=1) and t-CI over the per-prompt means of the scored rows."""
    values = np.asarray(values, dtype=float)
    scored = ~np.isnan(values)
    _, means = prompt_means(values, groups)
    n = len(means)
    low, high, note = _interval(means, "per-prompt mean(s)", level)
    return Summary(
        n_images=len(values),
        n_scored=int(scored.sum()),
        n_failed=int((~scored).sum()),
        n_prompts=n,
        mean=float(means.mean()) if n else float("nan"),
        std=float(means.std(ddof=1)) if n > 1 else float("nan"),
        ci_low=low,
        ci_high=high,
        ci_note=note,
    )


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
def tie_tolerance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair: the largest |a - b| still counted as a tie (see TIE_ATOL / TIE_RTOL)."""
    return TIE_ATOL + TIE_RTOL * np.maximum(np.abs(a), np.abs(b))


def signflip_p(diffs: Sequence[float], n_resamples: int = 9999, seed: int = 0) -> tuple[float, str]:
    """Two-sided paired sign-flip permutation test of mean(diffs) = 0: (p, method).

    Under the null each difference is as likely +|d| as -|d|; p = P(|sum s_i d_i| >= |sum d_i|) over
    sign vectors s. Zeros (ties) are left out (flipping them changes nothing). Up to EXACT_MAX_N
    nonzero differences every one of the 2^n patterns is enumerated ("exact"; the same p as
    scipy.stats.permutation_test with one sample and n_resamples=inf); above, ``n_resamples``
    random patterns with ``seed`` give p = (1 + #{as extreme}) / (1 + n_resamples) ("monte-carlo").
    (1.0, "none") with no nonzero difference; (NaN, "none") when empty.
    """
    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) == 0:
        if n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
        return float("nan"), "none"
    return signflip_many(diffs[diffs != 0][:, None], n_resamples, seed)[0]


def signflip_many(diffs: np.ndarray, n_resamples: int = 9999, seed: int = 0) -> list[tuple[float, str]]:
    """``signflip_p`` of every column of ``diffs`` (n_prompts x k); 0 where a column has no pair.

    A 0 adds nothing to a sign-flipped sum, so columns of different prompt sets share one row
    order. The Monte Carlo columns share one stream of random sign patterns (drawn as bits, summed
    in float32 by one matrix product per chunk): the cost is n_prompts x n_resamples once, not per
    comparison. Each p is a valid Monte Carlo p-value; Holm holds under any dependence between them.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    diffs = np.asarray(diffs, dtype=float)
    diffs = diffs[:, None] if diffs.ndim == 1 else diffs
    k = diffs.shape[1]
    results: list[tuple[float, str]] = [(1.0, "none")] * k
    n_untied = np.count_nonzero(diffs, axis=0)
    observed = np.abs(diffs.sum(axis=0))
    threshold = observed - _CMP_EPS * observed
    for j in np.flatnonzero((n_untied > 0) & (n_untied <= EXACT_MAX_N)):
        d = diffs[diffs[:, j] != 0, j]
        patterns = np.arange(2 ** len(d), dtype=np.int64)[:, None] >> np.arange(len(d))
        signs = 1.0 - 2.0 * (patterns & 1)
        results[j] = (float(np.mean(np.abs(signs @ d) >= threshold[j])), "exact")
    mc = np.flatnonzero(n_untied > EXACT_MAX_N)
    if len(mc):
        sub = diffs[:, mc]
        sub = sub[np.any(sub != 0, axis=1)].astype(np.float32)
        n = len(sub)
        # float32 sums: the relative rounding (~1e-6) only matters for patterns within that of the
        # observed sum, a negligible share; the slack keeps a pattern equal to the observed one counted
        slack = np.maximum(threshold[mc] - 1e-5 * np.sqrt((sub.astype(float) ** 2).sum(axis=0)), 0)
        rng = np.random.default_rng(seed)
        chunk = max(1, _CHUNK_CELLS // n)
        extreme = np.zeros(len(mc), dtype=np.int64)
        for start in range(0, n_resamples, chunk):
            rows = min(chunk, n_resamples - start)
            bits = np.unpackbits(np.frombuffer(rng.bytes((rows * n + 7) // 8), dtype=np.uint8), count=rows * n)
            signs = bits.reshape(rows, n).astype(np.float32) * 2 - 1
            extreme += np.count_nonzero(np.abs(signs @ sub) >= slack, axis=0)
        for j, count in zip(mc, extreme):
            results[j] = ((1 + int(count)) / (1 + n_resamples), "monte-carlo")
    return results


def min_signflip_p(n_untied: int, n_resamples: int = 9999) -> float:
    """The smallest p ``signflip_p`` can return with ``n_untied`` nonzero differences."""
    if n_untied == 0:
        return 1.0
    if n_untied <= EXACT_MAX_N:
        return 2.0 / 2**n_untied
    return 1.0 / (1 + n_resamples)


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value with every scipy option explicit; 1.0 when all are 0.

    Zeros are dropped (zero_method "wilcox"); method "exact" when at most WILCOXON_EXACT_MAX_N
    nonzero differences remain and their magnitudes are distinct (then the exact null holds),
    else "asymptotic" (normal approximation with tie correction, no continuity correction).
    """
    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) == 0:
        return float("nan")
    nonzero = diffs[diffs != 0]
    if len(nonzero) == 0:
        return 1.0  # scipy cannot rank an all-zero sample; "no difference at all" is p = 1
    return float(scipy.stats.wilcoxon(nonzero, **wilcoxon_options(nonzero)).pvalue)


def wilcoxon_options(nonzero: np.ndarray) -> dict:
    """The keyword arguments ``wilcoxon_p`` passes to scipy.stats.wilcoxon for these nonzero differences."""
    distinct = len(np.unique(np.abs(nonzero))) == len(nonzero)
    exact = len(nonzero) <= WILCOXON_EXACT_MAX_N and distinct
    return {
        "zero_method": WILCOXON_ZERO_METHOD,
        "correction": False,
        "alternative": "two-sided",
        "method": "exact" if exact else "asymptotic",
    }


def paired_differences(
    prompts: Sequence[Hashable], values: Sequence[float], base_prompts: Sequence[Hashable], base_values: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, int]:
    """(paired prompt keys, per-prompt differences with ties set to 0, number of unmatched prompts).

    Each side is averaged per prompt first (``prompt_means``), then prompts are paired: a folder
    with 4 samples per prompt against one with 1 pairs every prompt once.
    """
    keys, mine = prompt_means(values, prompts)
    base_keys, base = prompt_means(base_values, base_prompts)
    if keys.dtype.kind != base_keys.dtype.kind:
        keys, base_keys = keys.astype(str), base_keys.astype(str)
    i, j = common_keys(keys, base_keys)
    diffs = mine[i] - base[j]
    diffs[np.abs(diffs) <= tie_tolerance(mine[i], base[j])] = 0.0
    n_unmatched = len(keys) + len(base_keys) - 2 * len(i)
    return keys[i], diffs, n_unmatched


def paired_compare(
    prompts: Sequence[Hashable],
    values: Sequence[float],
    base_prompts: Sequence[Hashable],
    base_values: Sequence[float],
    higher_is_better: bool = True,
    n_resamples: int = 9999,
    seed: int = 0,
    level: float = LEVEL,
) -> Paired:
    """Compare a folder with the baseline on the prompts both have a score for (see the module doc).

    ``prompts`` / ``base_prompts``: one prompt key per row (rows of one prompt are its samples);
    ``values``: one score per row, NaN when failed. Prompts scored on one side only are left out
    and counted in ``n_unmatched``.
    """
    _, diffs, n_unmatched = paired_differences(prompts, values, base_prompts, base_values)
    return paired_from_differences(diffs, n_unmatched, higher_is_better, n_resamples, seed, level)


def paired_from_differences(
    diffs: np.ndarray,
    n_unmatched: int,
    higher_is_better: bool = True,
    n_resamples: int = 9999,
    seed: int = 0,
    level: float = LEVEL,
    test: tuple[float, str] | None = None,
) -> Paired:
    """``Paired`` from per-prompt differences (ties already 0); ``test``: a precomputed (p, method)."""
    n = len(diffs)
    low, high, note = _interval(diffs, "paired prompt difference(s)", level)
    sd = float(diffs.std(ddof=1)) if n > 1 else float("nan")
    mean = float(diffs.mean()) if n else float("nan")
    better = diffs if higher_is_better else -diffs
    rate = (lambda mask: float(mask.mean())) if n else (lambda mask: float("nan"))
    p, method = test if test is not None and n else signflip_p(diffs, n_resamples, seed)  # no pair: no test (NaN)
    n_untied = int(np.count_nonzero(diffs))
    return Paired(
        n_pairs=n,
        n_unmatched=n_unmatched,
        n_untied=n_untied,
        mean_diff=mean,
        sd_diff=sd,
        ci_low=low,
        ci_high=high,
        ci_note=note,
        effect_size_dz=mean / sd if n > 1 and sd > 0 else float("nan"),
        win_rate=rate(better > 0),
        tie_rate=rate(better == 0),
        loss_rate=rate(better < 0),
        p_value=p,
        p_method=method,
        min_p=min_signflip_p(n_untied, n_resamples) if n else float("nan"),
        wilcoxon_p=wilcoxon_p(diffs),
    )


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

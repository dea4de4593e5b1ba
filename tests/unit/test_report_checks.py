"""Checks that fail when the report's statistics are wrong, and proof that they do.

Each ``check_*`` below asserts exact hand-computed values (or a coverage band) through the code the
report runs. ``test_each_wrong_variant_is_caught`` then swaps in a plausible bug (a 50% interval,
per-sample pairing, raw instead of Holm p, unclustered images as units, Wilcoxon behind the verdict,
no tie tolerance) and asserts that the checks named for it now fail.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from janus_ray.report import build, stats
from janus_ray.report.build import compare
from janus_ray.report.data import Folder, Metric
from janus_ray.report.stats import paired_compare, signflip_p, summarize, t_interval

T_2 = 4.302652729749462  # Student t, 97.5% quantile, 2 degrees of freedom (tables: 4.303)
#: coverage of a 95% interval over REPS simulated samples: Monte Carlo sd sqrt(.95 * .05 / 4000) = 0.0034,
#: so [0.935, 0.965] is about +-4.4 sd around 0.95 for an exact interval
REPS, COVERAGE_BAND = 4000, (0.935, 0.965)


def _folder(name: str, rows: list[tuple[str, int, float]]) -> Folder:
    """A folder from (prompt text, sample, score) rows, keyed by text as data.load_folder does."""
    table = pd.DataFrame(rows, columns=["prompt", "sample", "S"])
    table["prompt_idx"] = -1  # no meaningful index (sidecar-style input): pairing must use the text
    table["prompt_key"] = "text:" + table["prompt"]
    return Folder(name, table, {})


METRIC = Metric("S", "s", True)


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------
def check_hand_interval() -> None:
    """Paired t-interval of per-prompt differences [1, 2, 3]: 2 -/+ t_2 / sqrt(3)."""
    r = paired_compare(["a", "b", "c"], [1.0, 2.0, 3.0], ["a", "b", "c"], [0.0, 0.0, 0.0], n_resamples=10)
    assert (r.ci_low, r.ci_high) == pytest.approx((2 - T_2 / np.sqrt(3), 2 + T_2 / np.sqrt(3)), abs=1e-9)
    assert (r.p_value, r.p_method, r.min_p) == (0.25, "exact", 0.25)  # 2 of the 8 sign patterns reach |6|


def check_coverage() -> None:
    """95% t-intervals cover the true mean 95% of the time at n = 3, 10, 30 (normal data), vectorised."""
    rng = np.random.default_rng(20261130)
    for n in (3, 10, 30):
        samples = rng.normal(0.7, 0.15, (REPS, n))
        low, high = t_interval(samples)
        coverage = np.mean((low <= 0.7) & (0.7 <= high))
        assert COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1], f"n={n}: coverage {coverage:.3f}"


def check_pairing() -> None:
    """4 samples per prompt against 1, prompts listed in different orders: every prompt pairs once."""
    mine = _folder("mine", [("cat", s, v) for s, v in enumerate([1.0, 2.0, 3.0, 4.0])]
                   + [("dog", s, v) for s, v in enumerate([0.0, 0.0, 0.0, 4.0])]
                   + [("owl", s, 2.0) for s in range(4)])
    base = _folder("base", [("owl", 0, 1.0), ("dog", 0, 0.5), ("cat", 0, 2.0)])
    row = compare([base, mine], [METRIC], "base", n_resamples=10).set_index("folder").loc["mine"]
    assert (row["n_pairs"], row["n_unmatched"]) == (3, 0)
    assert row["mean_diff"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)  # per-prompt means 2.5, 1, 2 vs 2, 0.5, 1
    assert row["mean"] == pytest.approx((2.5 + 1 + 2) / 3) and row["n_prompts"] == 3


def check_holm_verdict() -> None:
    """Two folders, each better on all 6 prompts: exact p = 2/64 each, Holm 2 x 2/64 = 0.0625 -> not significant."""
    base = _folder("base", [(f"p{i}", 0, 0.0) for i in range(6)])
    ups = [_folder(f"up{k}", [(f"p{i}", 0, 0.1 * (i + 1) + k) for i in range(6)]) for k in (1, 2)]
    table = compare([base, *ups], [METRIC], "base", n_resamples=10).set_index("folder")
    for name in ("up1", "up2"):
        assert table.loc[name, "p_value"] == 2 / 64 and table.loc[name, "holm_p"] == pytest.approx(0.0625)
        assert table.loc[name, "diff_ci_low"] > 0  # the unadjusted CI excludes 0 ...
        assert table.loc[name, "verdict"] == "not significant"  # ... but the Holm-adjusted verdict does not


def check_clustered_summary() -> None:
    """3 prompts x 4 samples with prompt means 1, 2, 3: the CI has 2 df (prompts), not 11 (images)."""
    values = [0.5, 1.5, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 2.5, 3.5]
    s = summarize(values, groups=[p for p in "abc" for _ in range(4)])
    assert (s.n_prompts, s.mean, s.std) == (3, pytest.approx(2.0), pytest.approx(1.0))
    assert (s.ci_low, s.ci_high) == pytest.approx((2 - T_2 / np.sqrt(3), 2 + T_2 / np.sqrt(3)))


def check_issue_example() -> None:
    """B = A + 0.01 on 45 prompts, A - 0.2 on 5: the mean is lower, its CI includes 0 -> not significant."""
    a = np.random.default_rng(0).uniform(0.2, 0.4, 50)
    b = a + np.where(np.arange(50) < 45, 0.01, -0.2)
    folders = [_folder(name, [(f"p{i}", 0, v) for i, v in enumerate(x)]) for name, x in (("a", a), ("b", b))]
    r = compare(folders, [METRIC], "a", n_resamples=9999, seed=0).set_index("folder").loc["b"]
    assert r["mean_diff"] == pytest.approx(-0.011)
    assert r["diff_ci_low"] < 0 < r["diff_ci_high"]
    assert r["wilcoxon_p"] < 1e-3  # what the old report used: "significantly worse" next to this interval
    assert r["p_value"] > 0.1 and r["verdict"] == "not significant"  # the test of the mean agrees with its interval


def check_noise_ties() -> None:
    """1e-9 on every prompt is float noise: all ties, p = 1."""
    a = np.random.default_rng(2).normal(0.3, 0.05, 20)
    keys = [f"p{i}" for i in range(20)]
    r = paired_compare(keys, a + 1e-9, keys, a, n_resamples=100)
    assert (r.tie_rate, r.p_value, r.mean_diff) == (1.0, 1.0, 0.0)


CHECKS = {
    "hand_interval": check_hand_interval,
    "coverage": check_coverage,
    "pairing": check_pairing,
    "holm_verdict": check_holm_verdict,
    "clustered_summary": check_clustered_summary,
    "issue_example": check_issue_example,
    "noise_ties": check_noise_ties,
}


@pytest.mark.parametrize("name", CHECKS)
def test_check_passes_on_the_real_code(name):
    CHECKS[name]()


# ---------------------------------------------------------------------------------------------
# Wrong variants, each of which some check must catch
# ---------------------------------------------------------------------------------------------
def _fifty_percent(mp):
    real = stats.t_crit
    mp.setattr(stats, "t_crit", lambda level, df: real(0.5, df))


def _per_sample_pairing(mp):
    mp.setattr(build, "_keys", lambda folder: (folder.table["prompt_key"] + "/" + folder.table["sample"].astype(str)).to_numpy(dtype=object))


def _raw_p(mp):
    mp.setattr(build, "holm", lambda p: np.asarray(p, dtype=float))


def _unclustered(mp):
    real = stats.prompt_means
    mp.setattr(stats, "prompt_means", lambda values, groups=None: real(values, None))


def _wilcoxon_verdict(mp):
    def wilcoxon_many(diffs, n_resamples=0, seed=0):
        return [(stats.wilcoxon_p(diffs[:, j]), "exact") for j in range(diffs.shape[1])]

    mp.setattr(stats, "signflip_many", wilcoxon_many)
    mp.setattr(build, "signflip_many", wilcoxon_many)


def _no_tie_tolerance(mp):
    mp.setattr(stats, "tie_tolerance", lambda a, b: np.zeros(np.shape(a)))


MUTANTS = {
    "50% instead of 95% interval": (_fifty_percent, ["hand_interval", "coverage", "clustered_summary"]),
    "per-sample instead of per-prompt pairing": (_per_sample_pairing, ["pairing"]),
    "raw instead of Holm p": (_raw_p, ["holm_verdict"]),
    "unclustered (images as units)": (_unclustered, ["clustered_summary", "pairing"]),
    "Wilcoxon behind the verdict": (_wilcoxon_verdict, ["issue_example"]),
    "exact float equality for ties": (_no_tie_tolerance, ["noise_ties"]),
}


@pytest.mark.parametrize("mutant", MUTANTS)
def test_each_wrong_variant_is_caught(mutant, monkeypatch):
    apply, caught_by = MUTANTS[mutant]
    apply(monkeypatch)
    for name in caught_by:
        with pytest.raises(AssertionError):
            CHECKS[name]()


# ---------------------------------------------------------------------------------------------
# Against scipy on the same data
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [5, 9, 14])
def test_signflip_exact_equals_scipy_permutation_test(n):
    d = np.round(np.random.default_rng(n).normal(0.1, 0.3, n), 3)
    expected = scipy.stats.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    ).pvalue
    p, method = signflip_p(d)
    assert method == "exact" and p == pytest.approx(expected, rel=1e-12)


def test_signflip_monte_carlo_agrees_with_scipy_and_with_the_t_test():
    d = np.random.default_rng(11).normal(0.05, 0.3, 60)
    p, method = signflip_p(d, n_resamples=20000, seed=1)
    expected = scipy.stats.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=20000, alternative="two-sided",
        rng=np.random.default_rng(2),
    ).pvalue
    # two independent Monte Carlo estimates of p ~ 0.35: each sd 0.0034, their difference sd 0.0048
    assert method == "monte-carlo" and p == pytest.approx(expected, abs=0.02)
    assert p == pytest.approx(scipy.stats.ttest_1samp(d, 0.0).pvalue, abs=0.02)  # same quantity, large n


def test_paired_compare_interval_and_test_match_ttest_rel_direction():
    rng = np.random.default_rng(5)
    base = rng.normal(0.3, 0.05, 25)
    mine = base + rng.normal(0.02, 0.03, 25)
    keys = [f"p{i}" for i in range(25)]
    r = paired_compare(keys, mine, keys, base, n_resamples=9999)
    expected = scipy.stats.ttest_rel(mine, base)
    assert (r.ci_low, r.ci_high) == pytest.approx(tuple(expected.confidence_interval(0.95)))
    assert (r.p_value < 0.05) == (expected.pvalue < 0.05)


def test_t_interval_agrees_with_scipy_bootstrap_bca_at_large_n():
    x = np.random.default_rng(8).normal(0.5, 0.1, 400)
    low, high = t_interval(x)
    bca = scipy.stats.bootstrap(
        (x,), np.mean, confidence_level=0.95, method="BCa", n_resamples=4000, rng=np.random.default_rng(0)
    ).confidence_interval
    width = high - low
    assert abs(bca.low - low) < 0.1 * width and abs(bca.high - high) < 0.1 * width


def test_percentile_bootstrap_would_undercover_at_n3_but_the_t_interval_does_not():
    """Why the report left the percentile bootstrap: the same simulated samples, scipy.stats.bootstrap."""
    rng = np.random.default_rng(3)
    samples = rng.normal(0.0, 1.0, (1000, 3))
    boot = scipy.stats.bootstrap(
        (samples,), np.mean, axis=-1, vectorized=True, method="percentile", n_resamples=999,
        rng=np.random.default_rng(0),
    ).confidence_interval
    boot_cover = np.mean((boot.low <= 0) & (0 <= boot.high))
    low, high = t_interval(samples)
    t_cover = np.mean((low <= 0) & (0 <= high))
    assert boot_cover < 0.85 and 0.93 <= t_cover <= 0.97


def test_a_metric_never_run_on_a_folder_is_not_computed_not_failed():
    """New users' trials: a folder scored without ImageReward showed "0 scored, 14 failed" for it. Its
    result files hold the column (every metric's, the earlier tool's schema), all NaN: the JSON meta
    says which metrics the run scored; without meta an all-NaN column reads as not computed."""
    a = _folder("a", [(f"p{i}", 0, float(i)) for i in range(4)])
    b = _folder("b", [(f"p{i}", 0, float("nan")) for i in range(4)])
    b.meta = {"metrics": {"other": {"column": "T", "columns": {"other": "T"}}}}  # its run scored another metric
    c = _folder("c", [(f"p{i}", 0, float("nan")) for i in range(4)])
    c.meta = {"metrics": {"s": {"column": "S", "columns": {"s": "S"}}}}  # scored S: every row failed
    d = _folder("d", [(f"p{i}", 0, float("nan")) for i in range(4)])  # no meta, no value
    table = compare([a, b, c, d], [METRIC], "a", n_resamples=99).set_index("folder")
    assert (table.loc["b", "n_scored"], table.loc["b", "n_failed"]) == (0, 0)
    assert table.loc["b", "ci_note"].startswith("not computed") and table.loc["d", "ci_note"].startswith("not computed")
    assert (table.loc["c", "n_scored"], table.loc["c", "n_failed"]) == (0, 4)
    assert (table.loc["a", "n_scored"], table.loc["a", "n_failed"]) == (4, 0)
    assert build._counts(table.loc["b"]) == "not computed"

"""The report's statistics against hand-checkable cases (janus_ray.report.stats, build.compare)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from janus_ray.report.build import compare
from janus_ray.report.data import Folder, Metric
from janus_ray.report.stats import bootstrap_mean_ci, holm, paired_compare, rank_means, summarize, wilcoxon_p


def keys(n: int, samples: int = 1) -> list[tuple[int, int]]:
    return [(p, s) for p in range(n) for s in range(samples)]


@pytest.fixture
def scores() -> np.ndarray:
    return np.random.default_rng(1).normal(0.3, 0.05, 30)


def test_identical_folders_differ_by_zero_with_p_one(scores):
    result = paired_compare(keys(30), scores, keys(30), scores, n_resamples=500)
    assert result.mean_diff == 0
    assert result.ci_low <= 0 <= result.ci_high
    assert result.p_value == 1.0
    assert (result.win_rate, result.tie_rate, result.loss_rate) == (0.0, 1.0, 0.0)
    assert (result.n_prompts, result.n_pairs, result.n_unmatched) == (30, 30, 0)


def test_better_on_every_prompt_wins_everywhere_with_small_p(scores):
    better = scores + np.linspace(0.01, 0.05, 30)  # distinct positive differences
    result = paired_compare(keys(30), better, keys(30), scores, n_resamples=500)
    assert result.win_rate == 1.0 and result.tie_rate == 0.0 and result.loss_rate == 0.0
    assert result.p_value < 1e-6
    assert 0 < result.ci_low <= result.mean_diff <= result.ci_high
    assert result.mean_diff == pytest.approx(0.03)


def test_win_rate_follows_the_metric_direction(scores):
    higher = scores + 0.01
    result = paired_compare(keys(30), higher, keys(30), scores, higher_is_better=False, n_resamples=100)
    assert (result.win_rate, result.loss_rate) == (0.0, 1.0)
    assert result.mean_diff == pytest.approx(0.01)  # the difference itself stays folder - baseline


def test_holm_matches_hand_computation():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_skips_nan_and_caps_at_one():
    adjusted = holm([0.5, np.nan, 0.2, 0.01])  # family of 3: 0.03, 0.4, max(0.4, 0.5) = 0.5
    np.testing.assert_allclose(adjusted, [0.5, np.nan, 0.4, 0.03])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])
    assert holm([]).shape == (0,)


def test_wilcoxon_matches_scipy():
    rng = np.random.default_rng(7)
    for n in (8, 30, 80):  # exact and normal-approximation regimes
        diffs = rng.normal(0.1, 1.0, n)
        assert wilcoxon_p(diffs) == pytest.approx(scipy.stats.wilcoxon(diffs).pvalue)
    with_zeros = np.array([0.0, 0.0, 0.3, -0.1, 0.5, 0.2, -0.4, 0.7, 0.9, 0.15])
    assert wilcoxon_p(with_zeros) == pytest.approx(scipy.stats.wilcoxon(with_zeros).pvalue)
    assert wilcoxon_p(np.zeros(12)) == 1.0
    assert np.isnan(wilcoxon_p([]))


def test_paired_p_value_is_wilcoxon_of_the_differences(scores):
    other = scores + np.random.default_rng(3).normal(0.01, 0.02, 30)
    result = paired_compare(keys(30), other, keys(30), scores, n_resamples=100)
    assert result.p_value == pytest.approx(scipy.stats.wilcoxon(other - scores).pvalue)


def test_bootstrap_is_deterministic_with_the_seed(scores):
    first = bootstrap_mean_ci(scores, n_resamples=1000, seed=5)
    assert bootstrap_mean_ci(scores, n_resamples=1000, seed=5) == first
    assert bootstrap_mean_ci(scores, n_resamples=1000, seed=6) != first
    assert first[0] < scores.mean() < first[1]


def test_bootstrap_resamples_prompts_not_images(scores):
    # one sample per prompt: the prompt bootstrap is the plain bootstrap
    assert bootstrap_mean_ci(scores, groups=np.arange(30), seed=2) == bootstrap_mean_ci(scores, seed=2)
    # two identical samples per prompt: the same CI as one (a prompt is drawn with both samples)
    doubled, groups = np.repeat(scores, 2), np.repeat(np.arange(30), 2)
    np.testing.assert_allclose(bootstrap_mean_ci(doubled, groups, seed=2), bootstrap_mean_ci(scores, seed=2))


def test_bootstrap_edge_cases():
    assert all(np.isnan(bootstrap_mean_ci([])))
    assert bootstrap_mean_ci([0.4]) == (0.4, 0.4)


def test_missing_prompts_are_left_out_and_counted(scores):
    mine_keys, mine = keys(30)[:-2], scores[:-2] + 0.01  # prompts 28, 29 missing here
    base = scores.copy()
    base[7] = np.nan  # failed in the baseline
    result = paired_compare(mine_keys, mine, keys(30), base, n_resamples=100)
    assert result.n_unmatched == 3
    assert result.n_pairs == result.n_prompts == 27
    assert result.mean_diff == pytest.approx(0.01)


def test_samples_are_matched_then_averaged_per_prompt():
    base = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    mine = base + np.array([0.2, 0.4, -0.1, -0.1, 0.0, 0.0])
    result = paired_compare(keys(3, 2), mine, keys(3, 2), base, n_resamples=100)
    assert (result.n_prompts, result.n_pairs) == (3, 6)
    assert result.mean_diff == pytest.approx((0.3 - 0.1 + 0.0) / 3)
    assert (result.win_rate, result.tie_rate, result.loss_rate) == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_summarize_counts_and_spread():
    values = np.array([1.0, 2.0, np.nan, 4.0])
    s = summarize(values, groups=[0, 1, 2, 3], n_resamples=200)
    assert (s.n_images, s.n_scored, s.n_failed) == (4, 3, 1)
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert 1.0 <= s.ci_low <= s.mean <= s.ci_high <= 4.0


def test_rank_means_direction_ties_and_missing():
    np.testing.assert_allclose(rank_means([0.2, 0.5, 0.5, np.nan]), [3, 1.5, 1.5, np.nan])
    np.testing.assert_allclose(rank_means([0.2, 0.5, 0.1], higher_is_better=False), [2, 3, 1])


def _folder(name: str, values: dict[str, np.ndarray]) -> Folder:
    n = len(next(iter(values.values())))
    table = pd.DataFrame({"prompt_idx": np.arange(n), "sample": np.zeros(n, dtype=int), **values})
    return Folder(name, table, {})


def test_compare_table_holm_family_ranks_and_verdicts(scores):
    metrics = [Metric("A", "a", True), Metric("B", "b", False)]
    folders = [
        _folder("base", {"A": scores, "B": scores}),
        _folder("same", {"A": scores, "B": scores}),
        _folder("up", {"A": scores + np.linspace(0.01, 0.05, 30), "B": scores + np.linspace(0.01, 0.05, 30)}),
    ]
    table = compare(folders, metrics, "base", seed=3, n_resamples=300)
    assert len(table) == 6 and set(table["n_resamples"]) == {300} and set(table["seed"]) == {3}
    tested = table[table["folder"] != "base"]
    np.testing.assert_allclose(tested["holm_p"], holm(tested["wilcoxon_p"]))  # one family of 4 tests
    cell = table.set_index(["folder", "column"])
    assert cell.loc[("up", "A"), "verdict"] == "significantly better"
    assert cell.loc[("up", "B"), "verdict"] == "significantly worse"  # lower is better for B
    assert cell.loc[("same", "A"), "verdict"] == "not significant"
    assert cell.loc[("base", "A"), "verdict"] == "baseline" and cell.loc[("base", "A"), "significant"] is None
    assert cell.loc[("up", "A"), "rank"] == 1 and cell.loc[("up", "B"), "rank"] == 3
    assert cell.loc[("up", "A"), "mean_rank"] == 2.0
    assert cell.loc[("base", "A"), "mean_rank"] == cell.loc[("same", "A"), "mean_rank"] == 2.0

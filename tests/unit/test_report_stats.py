"""The report's statistics against hand-checkable cases (janus_ray.report.stats, build.compare)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from janus_ray.report.build import compare
from janus_ray.report.data import Folder, Metric, prompt_keys
from janus_ray.report.stats import (
    common_keys, holm, min_signflip_p, paired_compare, prompt_means, rank_means, signflip_p, summarize, t_interval, wilcoxon_p,
)

T_2 = 4.302652729749462  # Student t, 97.5% quantile, 2 degrees of freedom (tables: 4.303)


def prompts(n: int, samples: int = 1) -> list[str]:
    """One prompt key per row: n prompts, ``samples`` rows each."""
    return [f"p{p:03d}" for p in range(n) for _ in range(samples)]


@pytest.fixture
def scores() -> np.ndarray:
    return np.random.default_rng(1).normal(0.3, 0.05, 30)


def test_identical_folders_differ_by_zero_with_p_one(scores):
    result = paired_compare(prompts(30), scores, prompts(30), scores, n_resamples=500)
    assert result.mean_diff == 0
    assert result.ci_low <= 0 <= result.ci_high
    assert result.p_value == 1.0 and result.wilcoxon_p == 1.0
    assert (result.win_rate, result.tie_rate, result.loss_rate) == (0.0, 1.0, 0.0)
    assert (result.n_pairs, result.n_unmatched, result.n_untied) == (30, 0, 0)
    assert "zero-width" in result.ci_note


def test_better_on_every_prompt_wins_everywhere_with_small_p(scores):
    better = scores + np.linspace(0.01, 0.05, 30)  # distinct positive differences
    result = paired_compare(prompts(30), better, prompts(30), scores, n_resamples=500)
    assert result.win_rate == 1.0 and result.tie_rate == 0.0 and result.loss_rate == 0.0
    assert result.p_value == 1 / 501 and result.p_method == "monte-carlo"  # no random pattern is as extreme
    assert result.wilcoxon_p < 1e-6
    assert 0 < result.ci_low <= result.mean_diff <= result.ci_high
    assert result.mean_diff == pytest.approx(0.03)


def test_win_rate_follows_the_metric_direction(scores):
    higher = scores + 0.01
    result = paired_compare(prompts(30), higher, prompts(30), scores, higher_is_better=False, n_resamples=100)
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


def test_wilcoxon_matches_scipy_with_explicit_methods():
    rng = np.random.default_rng(7)
    for n, method in ((8, "exact"), (30, "exact"), (80, "asymptotic")):
        diffs = rng.normal(0.1, 1.0, n)
        expected = scipy.stats.wilcoxon(diffs, zero_method="wilcox", correction=False, alternative="two-sided", method=method)
        assert wilcoxon_p(diffs) == pytest.approx(expected.pvalue)
    with_zeros = np.array([0.0, 0.0, 0.3, -0.1, 0.5, 0.2, -0.4, 0.7, 0.9, 0.15])  # zeros dropped, 8 distinct remain
    expected = scipy.stats.wilcoxon(with_zeros[with_zeros != 0], method="exact", zero_method="wilcox", correction=False)
    assert wilcoxon_p(with_zeros) == pytest.approx(expected.pvalue)
    tied = np.array([0.1, 0.1, -0.2, 0.3, 0.3, 0.4])  # tied magnitudes: the exact null no longer holds
    expected = scipy.stats.wilcoxon(tied, method="asymptotic", zero_method="wilcox", correction=False)
    assert wilcoxon_p(tied) == pytest.approx(expected.pvalue)
    assert wilcoxon_p(np.zeros(12)) == 1.0
    assert np.isnan(wilcoxon_p([]))


def test_signflip_exact_by_hand():
    # sums of +-1 +-2 +-3: 6, 4, 2, 0, 0, -2, -4, -6; |T| >= 6 for 2 of 8 patterns, |T| >= 2 for 6 of 8
    assert signflip_p([1.0, 2.0, 3.0]) == (0.25, "exact")
    assert signflip_p([1.0, -2.0, 3.0]) == (0.75, "exact")
    assert signflip_p([1.0, 0.0, 2.0, 3.0]) == (0.25, "exact")  # a tie (0) is not a pattern of its own
    assert signflip_p([0.0, 0.0]) == (1.0, "none")
    assert np.isnan(signflip_p([])[0])
    assert min_signflip_p(5) == 2 / 32 > 0.05 > min_signflip_p(6) == 2 / 64
    with pytest.raises(ValueError, match="n_resamples must be at least 1"):
        signflip_p([1.0], n_resamples=0)


def test_signflip_monte_carlo_is_deterministic_with_the_seed():
    d = np.random.default_rng(4).normal(0.2, 1.0, 40)
    first = signflip_p(d, n_resamples=2000, seed=5)
    assert first[1] == "monte-carlo" and signflip_p(d, n_resamples=2000, seed=5) == first
    assert signflip_p(d, n_resamples=2000, seed=6) != first


def test_t_interval_by_hand_and_vectorised():
    low, high = t_interval(np.array([1.0, 2.0, 3.0]))  # mean 2, sd 1, n 3
    assert (low, high) == pytest.approx((2 - T_2 / np.sqrt(3), 2 + T_2 / np.sqrt(3)))
    lows, highs = t_interval(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]]))
    assert lows.shape == (2,) and lows[0] == pytest.approx(low) and highs[1] == pytest.approx(1 + T_2 * np.sqrt(3) / np.sqrt(3))
    assert all(np.isnan(t_interval(np.array([0.4]))))


def test_summary_interval_is_none_below_two_prompts_and_says_why():
    one = summarize([0.4, 0.5], groups=["a", "a"])  # two samples of ONE prompt
    assert (one.n_prompts, one.mean) == (1, pytest.approx(0.45))
    assert np.isnan(one.ci_low) and np.isnan(one.ci_high) and "needs at least 2" in one.ci_note
    assert np.isnan(summarize([]).ci_low) and summarize([]).n_prompts == 0
    flat = summarize([0.4, 0.4, 0.4], groups=["a", "b", "c"])
    assert flat.ci_low == flat.ci_high == pytest.approx(0.4) and "zero-width" in flat.ci_note


def test_missing_prompts_are_left_out_and_counted(scores):
    mine_keys, mine = prompts(30)[:-2], scores[:-2] + 0.01  # prompts 28, 29 missing here
    base = scores.copy()
    base[7] = np.nan  # failed in the baseline
    result = paired_compare(mine_keys, mine, prompts(30), base, n_resamples=100)
    assert result.n_unmatched == 3
    assert result.n_pairs == 27
    assert result.mean_diff == pytest.approx(0.01)


def test_samples_are_averaged_per_prompt_before_pairing():
    base = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    mine = base + np.array([0.2, 0.4, -0.1, -0.1, 0.0, 0.0])
    result = paired_compare(prompts(3, 2), mine, prompts(3, 2), base, n_resamples=100)
    assert (result.n_pairs, result.n_unmatched) == (3, 0)
    assert result.mean_diff == pytest.approx((0.3 - 0.1 + 0.0) / 3)
    assert (result.win_rate, result.tie_rate, result.loss_rate) == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_four_samples_against_one_pair_every_prompt_once():
    base = np.array([2.0, 0.5, 1.0])  # one sample per prompt
    mine = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 4.0, 2.0, 2.0, 2.0, 2.0])  # per-prompt means 2.5, 1, 2
    result = paired_compare(prompts(3, 4), mine, prompts(3), base, n_resamples=100)
    assert (result.n_pairs, result.n_unmatched) == (3, 0)
    assert result.mean_diff == pytest.approx((0.5 + 0.5 + 1.0) / 3)


def test_float_noise_is_a_tie_not_a_win(scores):
    result = paired_compare(prompts(30), scores + 1e-9, prompts(30), scores, n_resamples=200)
    assert (result.tie_rate, result.n_untied, result.mean_diff, result.p_value) == (1.0, 0, 0.0, 1.0)
    real = paired_compare(prompts(30), scores + 1e-5, prompts(30), scores, n_resamples=200)  # 10x the tolerance
    assert real.win_rate == 1.0 and real.p_value < 0.01


def test_prompt_means_skip_failed_rows_and_missing_keys():
    keys, means = prompt_means([1.0, np.nan, 3.0, 5.0, 7.0], ["b", "b", "a", None, "a"])
    assert list(keys) == ["a", "b"] and list(means) == [5.0, 1.0]
    keys, means = prompt_means([np.nan], ["a"])
    assert len(keys) == len(means) == 0


def test_prompt_keys_prefer_the_text_and_fall_back_to_the_index():
    table = pd.DataFrame({"prompt_idx": [0, 5, 2, -1], "prompt": [" a cat\n", None, "", None]})
    keys = list(prompt_keys(table))
    assert keys[:3] == ["text:a cat", "idx:5", "idx:2"] and pd.isna(keys[3])


def test_paired_interval_matches_ttest_rel(scores):
    other = scores + np.random.default_rng(3).normal(0.01, 0.02, 30)
    result = paired_compare(prompts(30), other, prompts(30), scores, n_resamples=100)
    expected = scipy.stats.ttest_rel(other, scores).confidence_interval(confidence_level=0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((expected.low, expected.high))
    assert result.wilcoxon_p == pytest.approx(scipy.stats.wilcoxon(other - scores, method="exact").pvalue)
    assert result.effect_size_dz == pytest.approx((other - scores).mean() / (other - scores).std(ddof=1))


def test_summarize_counts_and_spread():
    values = np.array([1.0, 2.0, np.nan, 4.0])
    s = summarize(values, groups=[0, 1, 2, 3])
    assert (s.n_images, s.n_scored, s.n_failed, s.n_prompts) == (4, 3, 1, 3)
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(np.std([1, 2, 4], ddof=1))
    expected = scipy.stats.ttest_1samp([1.0, 2.0, 4.0], 0).confidence_interval(0.95)
    assert (s.ci_low, s.ci_high) == pytest.approx((expected.low, expected.high))


def test_rank_means_direction_ties_and_missing():
    np.testing.assert_allclose(rank_means([0.2, 0.5, 0.5, np.nan]), [3, 1.5, 1.5, np.nan])
    np.testing.assert_allclose(rank_means([0.2, 0.5, 0.1], higher_is_better=False), [2, 3, 1])


def _folder(name: str, values: dict[str, np.ndarray], keys: list[str] | None = None) -> Folder:
    n = len(next(iter(values.values())))
    table = pd.DataFrame({"prompt_idx": np.arange(n), "sample": np.zeros(n, dtype=int), **values})
    table["prompt_key"] = keys if keys is not None else prompts(n)
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
    np.testing.assert_allclose(tested["holm_p"], holm(tested["p_value"]))  # one family of 4 tests
    cell = table.set_index(["folder", "column"])
    assert cell.loc[("up", "A"), "verdict"] == "significantly better"
    assert cell.loc[("up", "B"), "verdict"] == "significantly worse"  # lower is better for B
    assert cell.loc[("same", "A"), "verdict"] == "not significant"
    assert cell.loc[("base", "A"), "verdict"] == "baseline" and cell.loc[("base", "A"), "significant"] is None
    assert cell.loc[("up", "A"), "rank"] == 1 and cell.loc[("up", "B"), "rank"] == 3
    assert cell.loc[("up", "A"), "mean_rank"] == 2.0
    assert cell.loc[("base", "A"), "mean_rank"] == cell.loc[("same", "A"), "mean_rank"] == 2.0
    # simultaneous (Bonferroni over 4 tests) intervals are wider than the unadjusted ones, around the same mean
    up = cell.loc[("up", "A")]
    assert up["diff_ci_low_simultaneous"] < up["diff_ci_low"] < up["mean_diff"] < up["diff_ci_high"] < up["diff_ci_high_simultaneous"]


def test_mean_rank_needs_every_metric_and_ranks_on_shared_prompts():
    metrics = [Metric("A", "a", True), Metric("B", "b", True)]
    keys4 = ["p0", "p1", "p2", "p3"]
    folders = [
        # x has an extra easy prompt p3: its mean over its own prompts (3.25) beats y's (2), not on the shared ones
        _folder("x", {"A": np.array([1.0, 1.0, 1.0, 10.0]), "B": np.array([1.0, 1.0, 1.0, 1.0])}, keys4),
        _folder("y", {"A": np.array([2.0, 2.0, 2.0]), "B": np.array([2.0, 2.0, 2.0])}, keys4[:3]),
        # z is the best on A but has no B at all: ranked on A, no mean rank
        _folder("z", {"A": np.array([5.0, 5.0, 5.0]), "B": np.full(3, np.nan)}, keys4[:3]),
    ]
    table = compare(folders, metrics, "x", n_resamples=10).set_index(["folder", "column"])
    assert table.loc[("x", "A"), "mean"] == 3.25 and table.loc[("x", "A"), "mean_shared"] == 1.0
    assert table.loc[("x", "A"), "n_prompts_shared"] == 3
    assert [table.loc[(f, "A"), "rank"] for f in "zyx"] == [1, 2, 3]
    assert np.isnan(table.loc[("z", "B"), "rank"])
    assert np.isnan(table.loc[("z", "A"), "mean_rank"]) and "no score for B" in table.loc[("z", "A"), "mean_rank_note"]
    # mean rank among x and y only (z left out of the re-ranking): y first on both metrics
    assert table.loc[("y", "A"), "mean_rank"] == 1.0 and table.loc[("x", "B"), "mean_rank"] == 2.0
    assert table.loc[("x", "A"), "mean_rank_note"] == ""


def test_small_n_says_the_test_cannot_reach_significance():
    base = _folder("base", {"A": np.zeros(4)})
    up = _folder("up", {"A": np.array([1.0, 2.0, 3.0, 4.0])})
    row = compare([base, up], [Metric("A", "a", True)], "base", n_resamples=10).set_index("folder").loc["up"]
    assert row["min_p"] == 2 / 16 and row["p_value"] == 2 / 16 and row["p_method"] == "exact"
    assert row["diff_ci_low"] > 0 and row["verdict"] == "not significant"
    assert "n too small for the test" in row["note"] and "smallest possible p is 0.125" in row["note"]


def test_one_paired_prompt_has_no_interval_and_says_why():
    base = _folder("base", {"A": np.array([0.5])})
    up = _folder("up", {"A": np.array([0.7])})
    row = compare([base, up], [Metric("A", "a", True)], "base", n_resamples=10).set_index("folder").loc["up"]
    assert np.isnan(row["diff_ci_low"]) and np.isnan(row["effect_size_dz"]) and row["n_pairs"] == 1
    assert "no interval: 1 paired prompt difference(s)" in row["note"] and row["verdict"] == "not significant"


def test_common_keys_of_sorted_unique_arrays():
    i, j = common_keys(np.array([1, 3, 5, 9]), np.array([0, 3, 4, 9, 12]))
    assert list(i) == [1, 3] and list(j) == [1, 3]
    i, j = common_keys(np.array(["a", "c"]), np.array(["b", "c"]))
    assert list(i) == [1] and list(j) == [1]
    assert len(common_keys(np.array([1]), np.array([], dtype=int))[0]) == 0


def test_integer_prompt_codes_group_like_texts_and_negative_means_no_prompt():
    keys, means = prompt_means([1.0, 3.0, 5.0, 7.0], np.array([2, 0, 2, -1]))
    assert list(keys) == [0, 2] and list(means) == [3.0, 3.0]


def test_a_small_p_next_to_an_interval_including_zero_is_not_called_significant(monkeypatch):
    from janus_ray.report import build

    # the permutation and t reference distributions can disagree at the margin; force it
    monkeypatch.setattr(build, "signflip_many", lambda d, n_resamples=0, seed=0: [(1e-6, "exact")] * d.shape[1])
    base = _folder("base", {"A": np.zeros(8)})
    mixed = _folder("mixed", {"A": np.array([1.0, -1.0, 2.0, -2.0, 1.5, -1.5, 0.5, -0.4])})
    row = compare([base, mixed], [Metric("A", "a", True)], "base", n_resamples=10).set_index("folder").loc["mixed"]
    assert row["holm_p"] < 0.05 and row["diff_ci_low"] < 0 < row["diff_ci_high"]
    assert row["significant"] is False and row["verdict"] == "not significant"
    assert "t-interval includes 0" in row["note"]


def test_prompt_keys_pair_texts_that_differ_only_by_spaces_or_unicode_form():
    """A second new user's trial: the report paired 'a blue dog ' with 'a blue dog' but not NFD 'café'
    with NFC 'café', while eval said neither was paired: one rule now (manifest.normal_prompt)."""
    import unicodedata

    from janus_ray.manifest import normal_prompt

    texts = ["a blue dog ", "a  blue\tdog", unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")]
    keys = list(prompt_keys(pd.DataFrame({"prompt": texts, "prompt_idx": pd.array([None] * 4, dtype="Int64")})))
    assert keys[0] == keys[1] == "text:a blue dog" and keys[2] == keys[3] == "text:" + normal_prompt(texts[3])

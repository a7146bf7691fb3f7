"""Statistics over seeds match values computed by hand from their formulas."""

from __future__ import annotations

import math

import pytest

from tapa_lab.ablation.stats import WILCOXON_MIN_PAIRS, paired_test, summarize


def test_summary_is_mean_sd_and_t_interval():
    # mean 2.5; sd = sqrt(5/3) = 1.290994; t(0.975, 3) = 3.182446; half width = 3.182446 * 1.290994 / 2 = 2.054260
    summary = summarize([1.0, 2.0, 3.0, 4.0])
    assert summary.n == 4
    assert summary.mean == pytest.approx(2.5)
    assert summary.std == pytest.approx(1.290994, abs=1e-6)
    assert summary.ci_low == pytest.approx(0.445740, abs=1e-6)
    assert summary.ci_high == pytest.approx(4.554260, abs=1e-6)
    assert summary.half_width == pytest.approx(2.054260, abs=1e-6)


def test_summary_of_one_seed_has_no_spread():
    summary = summarize([3.0])
    assert summary.mean == 3.0 and math.isnan(summary.std) and math.isnan(summary.ci_low)


def test_paired_t_test_and_cohens_dz():
    # differences 1, 2, 3, 5: mean 2.75, sd sqrt(8.75/3) = 1.707825; t = 2.75 / (1.707825 / 2) = 3.220468 on 3 df,
    # two-sided p = 0.048567; d_z = 2.75 / 1.707825 = 1.610235
    test = paired_test([2.0, 4.0, 6.0, 9.0], [1.0, 2.0, 3.0, 4.0])
    assert test.n == 4
    assert test.mean_diff == pytest.approx(2.75)
    assert test.t_pvalue == pytest.approx(0.048567, abs=1e-6)
    assert test.cohens_dz == pytest.approx(1.610235, abs=1e-6)
    assert test.wilcoxon_pvalue is None  # too few pairs for Wilcoxon to mean anything


def test_wilcoxon_with_enough_pairs_is_the_exact_sign_rank_p():
    # six positive differences: the exact two-sided p of the signed-rank test is 2 / 2^6 = 0.03125
    baseline = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    candidate = [b + d for b, d in zip(baseline, [0.5, 1.0, 1.5, 2.0, 2.5, 3.5], strict=True)]
    test = paired_test(candidate, baseline)
    assert test.n == WILCOXON_MIN_PAIRS
    assert test.wilcoxon_pvalue == pytest.approx(0.03125)


def test_identical_runs_give_no_p_value_rather_than_an_error():
    test = paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert test.mean_diff == 0 and math.isnan(test.t_pvalue) and math.isnan(test.cohens_dz)


def test_unpaired_lengths_are_refused():
    with pytest.raises(ValueError, match="3 candidate values but 2 baseline"):
        paired_test([1.0, 2.0, 3.0], [1.0, 2.0])

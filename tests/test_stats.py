"""Paired comparisons over seeds against scipy's paired t-test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pipeline.stats import BETTER, UNDECIDED, WORSE, compare_paired, paired_t_interval, verdict


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("seeds", [2, 3, 5, 10])
def test_interval_matches_scipys_paired_t_test(seeds: int, confidence: float):
    rng = np.random.default_rng(seeds)
    run, baseline = rng.normal(0.7, 0.02, seeds), rng.normal(0.68, 0.02, seeds)
    result = compare_paired(run.tolist(), baseline.tolist(), confidence)
    reference = stats.ttest_rel(run, baseline).confidence_interval(confidence)
    assert result.mean == pytest.approx(np.mean(run - baseline), abs=1e-12)
    assert (result.low, result.high) == pytest.approx((reference.low, reference.high),
                                                      abs=1e-12)


def test_half_width_on_a_known_case():
    # d = (1, 2, 3): mean 2, sd 1, t_{0.975, 2} = 4.302653 -> half-width 4.302653 / sqrt(3)
    mean, half = paired_t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)


def test_pairing_removes_the_shared_seed_variation():
    # seeds move both runs together: unpaired the difference would be lost in the spread
    shared = [0.60, 0.70, 0.80, 0.65]
    result = compare_paired([s + 0.01 for s in shared], shared)
    assert result.mean == pytest.approx(0.01)
    assert result.high - result.low == pytest.approx(0.0, abs=1e-9)
    assert result.verdict == BETTER


@pytest.mark.parametrize(("low", "high", "higher_is_better", "expected"), [
    (0.01, 0.03, True, BETTER), (-0.03, -0.01, True, WORSE), (-0.01, 0.02, True, UNDECIDED),
    (0.0, 0.02, True, UNDECIDED),  # touching zero is not a detected difference
    (0.01, 0.03, False, WORSE), (-0.03, -0.01, False, BETTER), (-0.01, 0.01, False, UNDECIDED),
])
def test_verdict_thresholds(low: float, high: float, higher_is_better: bool, expected: str):
    assert verdict(low, high, higher_is_better) == expected


def test_one_seed_gives_no_interval_and_no_verdict():
    result = compare_paired([0.8], [0.7])
    assert result.mean == pytest.approx(0.1)
    assert (result.low, result.high, result.verdict, result.half_width) == (None,) * 4


def test_a_noisy_difference_is_not_a_verdict():
    result = compare_paired([0.71, 0.65, 0.70], [0.66, 0.70, 0.69])
    assert result.low < 0 < result.high
    assert result.verdict == UNDECIDED


def test_unpaired_lengths_are_an_error():
    with pytest.raises(ValueError, match="paired"):
        compare_paired([0.1, 0.2], [0.1])


def test_the_spread_is_never_below_the_metrics_resolution():
    # identical differences of one step: zero spread, but one step is all a test set of
    # 100 images can resolve
    _, half = paired_t_interval([0.01, 0.01, 0.01], resolution=0.01)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * 0.01 / np.sqrt(3))
    assert compare_paired([0.71, 0.81], [0.70, 0.80], resolution=0.01).verdict == UNDECIDED
    # a spread above the resolution is left as it is
    assert paired_t_interval([0.0, 0.2], resolution=0.01) == paired_t_interval([0.0, 0.2])

"""Paired comparisons over seeds against scipy's paired t-test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pipeline.stats import (
    BETTER,
    UNDECIDED,
    WORSE,
    compare_paired,
    detectable_effect,
    holm,
    paired_t_interval,
    seeds_needed,
    stable_reach,
    verdict,
)


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


# ------------------------------------------------- p-values, Holm, detectable effect, reach


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_p_value_matches_scipys_paired_t_test(seeds: int):
    rng = np.random.default_rng(10 + seeds)
    run, baseline = rng.normal(0.7, 0.02, seeds), rng.normal(0.68, 0.02, seeds)
    result = compare_paired(run.tolist(), baseline.tolist())
    assert result.p_value == pytest.approx(stats.ttest_rel(run, baseline).pvalue, rel=1e-9)
    # the interval excludes zero exactly when p < 1 - confidence
    assert (result.verdict != UNDECIDED) == (result.p_value < 0.05)


def _holm_rejections(p_values: list[float], alpha: float) -> set[int]:
    """Holm's step-down rule as written: reject the i-th smallest while
    p_(i) <= alpha / (m - i + 1), stop at the first that is not."""
    m, rejected = len(p_values), set()
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        if p_values[index] > alpha / (m - rank):
            break
        rejected.add(index)
    return rejected


def test_holm_on_a_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04: x4, x3, x2, x1 -> 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # the case: p = 0.028, smallest of 12 -> 0.336
    assert holm([0.028] + [0.5] * 11)[0] == pytest.approx(0.336)
    assert holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])  # capped at 1, kept monotone


@pytest.mark.parametrize("trial", range(20))
def test_holm_adjusted_p_values_reproduce_the_step_down_rule(trial: int):
    rng = np.random.default_rng(trial)
    p_values = (rng.uniform(0, 0.1, 12) ** rng.uniform(0.5, 2)).tolist()
    adjusted = holm(p_values)
    for alpha in (0.01, 0.05, 0.1):
        assert {i for i, p in enumerate(adjusted) if p <= alpha} == \
            _holm_rejections(p_values, alpha)


def test_holm_of_nothing_is_nothing():
    assert holm([]) == []


@pytest.mark.parametrize("seeds", [3, 5])
def test_detectable_effect_has_the_stated_power_by_simulation(seeds: int):
    """At the detectable effect, simulated paired t tests (scipy) reject 80% of the time."""
    sd = 0.02
    delta = detectable_effect(sd, seeds)
    rng = np.random.default_rng(seeds)
    differences = rng.normal(delta, sd, size=(200_000, seeds))
    rejected = stats.ttest_1samp(differences, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.005)
    # and the normal-approximation formula is in the same place, a little lower
    approximate = (stats.t.ppf(0.975, seeds - 1) + stats.t.ppf(0.8, seeds - 1)) * sd \
        / np.sqrt(seeds)
    assert approximate == pytest.approx(delta, rel=0.1)


def test_detectable_effect_is_reported_with_every_verdict():
    result = compare_paired([0.71, 0.65, 0.70], [0.66, 0.70, 0.69], resolution=1e-4)
    assert result.detectable == pytest.approx(detectable_effect(result.sd, 3))
    # the resolution floors the sd here as it does the interval's
    floored = compare_paired([0.71, 0.81, 0.91], [0.70, 0.80, 0.90], resolution=0.01)
    assert floored.sd == 0.01 and floored.detectable == pytest.approx(
        detectable_effect(0.01, 3))


def test_seeds_needed_is_the_fewest_that_detect_the_difference():
    sd, delta = 0.02, 0.01
    needed = seeds_needed(delta, sd)
    assert detectable_effect(sd, needed) <= delta < detectable_effect(sd, needed - 1)
    # by the normal approximation, ((z_0.975 + z_0.8) sd / delta)^2 + a little
    assert needed == pytest.approx(((1.959964 + 0.841621) * sd / delta) ** 2, abs=3)
    assert seeds_needed(1.0, 0.01) == 2
    assert seeds_needed(1e-9, 1.0) is None


@pytest.mark.parametrize("values", [[0.7, float("nan"), 0.72], [0.7, None, 0.72]])
def test_a_missing_or_nan_value_is_undefined_never_a_verdict(values):
    result = compare_paired(values, [0.6, 0.6, 0.6])
    assert result.verdict == "undefined (run value 1 is " + str(values[1]) + ")"
    assert (result.mean, result.low, result.p_value, result.detectable) == (None,) * 4
    assert compare_paired([0.6] * 3, values).verdict.startswith("undefined (baseline")


def _stays_above_by_brute_force(epochs, values, target):
    """Try every epoch in order; the first whose every later point is at/above target."""
    points = sorted(zip(epochs, values, strict=True))
    for i, (epoch, _) in enumerate(points):
        if all(v >= target for _, v in points[i:]):
            return epoch
    return None


def test_stable_reach_ignores_a_crossing_that_dips_back():
    # the SimCLR+DSA shape: crosses at 6, below for 8-14, above from 16 on
    epochs = list(range(2, 22, 2))
    values = [0.70, 0.78, 0.79, 0.78, 0.77, 0.78, 0.785, 0.79, 0.80, 0.81]
    assert stable_reach(epochs, values, 0.787) == 16
    assert stable_reach(epochs, values, 0.90) is None  # never reached
    assert stable_reach([2, 4], [0.9, float("nan")], 0.5) is None  # NaN never reaches


@pytest.mark.parametrize("trial", range(30))
def test_stable_reach_matches_brute_force(trial: int):
    rng = np.random.default_rng(trial)
    epochs = rng.permutation(np.arange(1, 13) * 2).tolist()  # any order in
    values = rng.uniform(0.6, 0.9, len(epochs)).tolist()
    target = float(rng.uniform(0.6, 0.9))
    assert stable_reach(epochs, values, target) == _stays_above_by_brute_force(
        epochs, values, target)

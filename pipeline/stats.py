"""Paired comparisons over seeds: mean difference, a paired-t interval, a p-value, a
verdict, the smallest difference the design could detect, and Holm's adjustment.

Two runs trained with the same seeds are paired by seed (same data order, initialisation
and augmentation draws wherever the methods allow), so the per-seed differences remove
the variation the seeds share. The interval is the paired t interval

    mean(d) +- t_{(1 + confidence) / 2, S - 1} * sd(d) / sqrt(S)

over S seeds, where sd is never taken below the metric's resolution (an accuracy on n test
images moves in steps of 1/n: two seeds that happen to differ by the same step must not
give a zero-width interval). The verdict says only what the interval supports: `better`
when the whole interval lies on the better side of zero, `worse` when it lies on the other
side, and `no detectable difference` otherwise. Fewer than 2 seeds give neither, and a
difference that is not a number gives `undefined (reason)`, never a verdict.

Beside every verdict: the two-sided paired-t p-value (with the same floored sd), and the
detectable effect, the smallest true difference the same test finds with probability
`power`, solved exactly from the noncentral t distribution. A family of verdicts is
adjusted by Holm's step-down method (`holm`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import optimize, stats

BETTER, WORSE, UNDECIDED = "better", "worse", "no detectable difference"
POWER = 0.8  # the power at which the detectable effect is stated
MAX_SEEDS = 10_000  # `seeds_needed` looks no further


def undefined(reason: str) -> str:
    """The verdict of a comparison that cannot be made, with its reason."""
    return f"undefined ({reason})"


@dataclass(frozen=True)
class PairedDifference:
    """The mean per-seed difference (run - baseline), its interval, p-value, verdict and
    detectable effect; all but `seeds` and `mean` are None with fewer than 2 seeds, and
    everything but `seeds` and `verdict` is None when the comparison is undefined."""

    seeds: int
    mean: float | None
    low: float | None
    high: float | None
    verdict: str | None
    p_value: float | None = None
    sd: float | None = None  # of the differences, floored at the resolution
    detectable: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2


def floored_sd(differences: Sequence[float], resolution: float = 0.0) -> float:
    """Sample standard deviation of the differences, never below `resolution`."""
    mean = math.fsum(differences) / len(differences)
    variance = math.fsum((d - mean) ** 2 for d in differences) / (len(differences) - 1)
    return max(math.sqrt(variance), resolution)


def paired_t_interval(differences: Sequence[float], confidence: float = 0.95,
                      resolution: float = 0.0) -> tuple[float, float | None]:
    """Mean of the differences and the half-width of its paired-t interval (None for a
    single difference); the standard deviation is at least `resolution`."""
    n = len(differences)
    if n == 0:
        raise ValueError("no paired differences")
    mean = math.fsum(differences) / n
    if n < 2:
        return mean, None
    quantile = stats.t.ppf((1 + confidence) / 2, df=n - 1)
    return mean, float(quantile * floored_sd(differences, resolution) / math.sqrt(n))


def paired_t_p_value(mean: float, sd: float, seeds: int) -> float:
    """Two-sided p-value of the paired t test of mean difference 0 (sd already floored)."""
    if sd == 0:
        return 0.0 if mean != 0 else 1.0
    t = mean / (sd / math.sqrt(seeds))
    return float(2 * stats.t.sf(abs(t), df=seeds - 1))


def detectable_effect(sd: float, seeds: int, alpha: float = 0.05,
                      power: float = POWER) -> float:
    """Smallest true mean difference that a two-sided paired t test at `alpha` over
    `seeds` seeds detects with probability `power`, for differences of standard deviation
    `sd`: solves P(|T'| > t_{1 - alpha/2}) = power for T' ~ noncentral t(S - 1,
    delta sqrt(S) / sd). In the units of `sd`."""
    if seeds < 2:
        raise ValueError("a detectable effect needs at least 2 seeds")
    if sd == 0:
        return 0.0
    df, critical = seeds - 1, stats.t.ppf(1 - alpha / 2, seeds - 1)

    def shortfall(noncentrality: float) -> float:
        # the lower tail as the upper tail of -T' (scipy's nct.cdf far in the tail is NaN)
        rejected = (stats.nct.sf(critical, df, noncentrality)
                    + stats.nct.sf(critical, df, -noncentrality))
        return float(rejected - power)

    upper = 2 * (critical + stats.norm.ppf(power))
    while shortfall(upper) < 0:
        upper *= 2
    noncentrality = optimize.brentq(shortfall, 0.0, upper, xtol=1e-10)
    return float(noncentrality * sd / math.sqrt(seeds))


def seeds_needed(delta: float, sd: float, alpha: float = 0.05,
                 power: float = POWER) -> int | None:
    """The fewest seeds (at least 2) whose detectable effect, at this `sd`, is at most
    `delta`; None when even `MAX_SEEDS` seeds do not reach it."""
    if delta <= 0:
        raise ValueError("the difference to detect must be positive")
    if detectable_effect(sd, MAX_SEEDS, alpha, power) > delta:
        return None
    low, high = 1, MAX_SEEDS  # detectable(low) > delta >= detectable(high); 1 never does
    while high - low > 1:
        middle = (low + high) // 2
        if detectable_effect(sd, middle, alpha, power) <= delta:
            high = middle
        else:
            low = middle
    return high


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order: for the i-th smallest of m,
    max over j <= i of min(1, (m - j + 1) p_(j)). A family member is rejected at `alpha`
    when its adjusted p-value is below `alpha`."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def verdict(low: float, high: float, higher_is_better: bool = True) -> str:
    """`better`, `worse` or `no detectable difference` for an interval of run - baseline."""
    if low > 0:
        return BETTER if higher_is_better else WORSE
    if high < 0:
        return WORSE if higher_is_better else BETTER
    return UNDECIDED


def p_verdict(mean: float, p_value: float, alpha: float, higher_is_better: bool = True
              ) -> str:
    """The verdict of a (possibly adjusted) p-value: a direction only when p < alpha."""
    if p_value >= alpha or mean == 0:
        return UNDECIDED
    return verdict(mean, mean, higher_is_better)


def _not_finite(values: Sequence[float | None]) -> list[int]:
    return [i for i, v in enumerate(values) if v is None or not math.isfinite(v)]


def compare_paired(run: Sequence[float | None], baseline: Sequence[float | None],
                   confidence: float = 0.95, higher_is_better: bool = True,
                   resolution: float = 0.0) -> PairedDifference:
    """Paired comparison of a metric over seeds (`run[i]` and `baseline[i]` share seed i);
    `resolution` is the smallest step the metric can take (1/n for an accuracy on n). A
    missing or non-finite value makes the comparison undefined, naming the position."""
    if len(run) != len(baseline):
        raise ValueError(f"{len(run)} values paired with {len(baseline)}")
    for side, values in (("run", run), ("baseline", baseline)):
        if bad := _not_finite(values):
            return PairedDifference(len(run), None, None, None,
                                    undefined(f"{side} value {bad[0]} is {values[bad[0]]}"))
    differences = [a - b for a, b in zip(run, baseline, strict=True)]
    mean, half = paired_t_interval(differences, confidence, resolution)
    if half is None:
        return PairedDifference(len(differences), mean, None, None, None)
    seeds, sd = len(differences), floored_sd(differences, resolution)
    low, high = mean - half, mean + half
    return PairedDifference(seeds, mean, low, high, verdict(low, high, higher_is_better),
                            paired_t_p_value(mean, sd, seeds), sd,
                            detectable_effect(sd, seeds, 1 - confidence))


def stable_reach(epochs: Sequence[int], values: Sequence[float], target: float
                 ) -> int | None:
    """The first epoch from which the curve stays at or above `target` (no later dip
    below); None when its last point is below (or not a number): not reached."""
    reached = None
    for epoch, value in sorted(zip(epochs, values, strict=True), reverse=True):
        if not value >= target:  # NaN never reaches
            break
        reached = epoch
    return reached

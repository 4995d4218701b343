"""Paired comparisons over seeds: mean difference, a paired-t interval and a verdict.

Two runs trained with the same seeds are paired by seed (same data order, initialisation
and augmentation draws wherever the methods allow), so the per-seed differences remove
the variation the seeds share. The interval is the paired t interval

    mean(d) +- t_{(1 + confidence) / 2, S - 1} * sd(d) / sqrt(S)

over S seeds, where sd is never taken below the metric's resolution (an accuracy on n test
images moves in steps of 1/n: two seeds that happen to differ by the same step must not
give a zero-width interval). The verdict says only what the interval supports: `better`
when the whole interval lies on the better side of zero, `worse` when it lies on the other side, and
`no detectable difference` otherwise. Fewer than 2 seeds give neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

BETTER, WORSE, UNDECIDED = "better", "worse", "no detectable difference"


@dataclass(frozen=True)
class PairedDifference:
    """The mean per-seed difference (run - baseline) and its interval; `low`/`high` and
    `verdict` are None with fewer than 2 seeds."""

    seeds: int
    mean: float
    low: float | None
    high: float | None
    verdict: str | None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2


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
    variance = math.fsum((d - mean) ** 2 for d in differences) / (n - 1)
    deviation = max(math.sqrt(variance), resolution)
    quantile = stats.t.ppf((1 + confidence) / 2, df=n - 1)
    return mean, float(quantile * deviation / math.sqrt(n))


def verdict(low: float, high: float, higher_is_better: bool = True) -> str:
    """`better`, `worse` or `no detectable difference` for an interval of run - baseline."""
    if low > 0:
        return BETTER if higher_is_better else WORSE
    if high < 0:
        return WORSE if higher_is_better else BETTER
    return UNDECIDED


def compare_paired(run: Sequence[float], baseline: Sequence[float], confidence: float = 0.95,
                   higher_is_better: bool = True, resolution: float = 0.0
                   ) -> PairedDifference:
    """Paired comparison of a metric over seeds (`run[i]` and `baseline[i]` share seed i);
    `resolution` is the smallest step the metric can take (1/n for an accuracy on n)."""
    if len(run) != len(baseline):
        raise ValueError(f"{len(run)} values paired with {len(baseline)}")
    differences = [a - b for a, b in zip(run, baseline, strict=True)]
    mean, half = paired_t_interval(differences, confidence, resolution)
    if half is None:
        return PairedDifference(len(differences), mean, None, None, None)
    low, high = mean - half, mean + half
    return PairedDifference(len(differences), mean, low, high,
                            verdict(low, high, higher_is_better))

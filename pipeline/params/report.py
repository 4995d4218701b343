"""`report:`: which runs are the references and which pairs are compared."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pipeline.params.base import Strict


class ReportConfig(Strict):
    """What the report compares. Runs are paired by seed: the same seed gives the same
    split, initialisation, data order and augmentation draws wherever the methods allow.

    Every run is compared with the `control` run (untrained encoder) and the `supervised`
    run of its dataset, and each `[run, baseline]` pair of `comparisons` is compared
    directly: the mean over seeds of the per-seed difference, with a paired-t interval at
    `confidence`, and a verdict (better, no detectable difference, worse) that needs at
    least 2 seeds, beside its Holm-adjusted verdict (the family: the listed comparisons x
    their metrics) and the smallest difference the comparison could detect. `gap_closed`
    is (acc - acc_control) / (acc_supervised - acc_control) in linear top-1;
    `reach_fraction` sets the accuracy, as a fraction of the supervised
    run's, from whose epoch on each run's online probe curve stays at or above it.
    """

    control: list[str] = []
    supervised: list[str] = []
    comparisons: list[tuple[str, str]] = []
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    reach_fraction: Annotated[float, Field(gt=0, le=1)] = 0.9
    # a difference in top-1 accuracy (0.01: one point) for which the report gives the
    # seeds a comparison needs to detect it with power 0.8, from its observed spread
    detect: Annotated[float, Field(gt=0, lt=1)] = 0.01


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
    least 2 seeds. `gap_closed` is (acc - acc_control) / (acc_supervised - acc_control) in
    linear top-1; `reach_fraction` sets the accuracy, as a fraction of the supervised
    run's, whose first epoch each run's online probe curve reports.
    """

    control: list[str] = []
    supervised: list[str] = []
    comparisons: list[tuple[str, str]] = []
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    reach_fraction: Annotated[float, Field(gt=0, le=1)] = 0.9


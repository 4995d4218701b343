"""What `report` reads: each run's identity (dataset, method, epochs), the seeds, the
probe settings that name its metrics, and the report's own params."""

from __future__ import annotations

from pipeline.params.base import NonNegativeInt, Strict
from pipeline.params.evaluation import KNNConfig, LowShotConfig
from pipeline.params.report import ReportConfig


class ReportRun(Strict):
    dataset: str
    method: str  # `simclr`, or `simclr+dsa` with a regulator
    epochs: NonNegativeInt


class ReportParams(Strict):
    runs: dict[str, ReportRun]
    seeds: list[int]
    knn: KNNConfig
    low_shot: LowShotConfig
    report: ReportConfig

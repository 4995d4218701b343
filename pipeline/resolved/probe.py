"""What `probe@<run>` reads: the run's dataset, the seeds and the probes' settings."""

from __future__ import annotations

from pipeline.params.base import Strict
from pipeline.params.evaluation import KNNConfig, LinearProbeConfig, LowShotConfig


class ProbeParams(Strict):
    dataset: str
    seeds: list[int]
    linear: LinearProbeConfig
    knn: KNNConfig
    low_shot: LowShotConfig

"""What `features@<run>` reads: every (dataset, split) whose features the run's
evaluations read, and each of those datasets' params (which decide their shards)."""

from __future__ import annotations

from pipeline.params.base import PositiveInt, Strict
from pipeline.params.data import DatasetConfig


class FeaturesParams(Strict):
    dataset: str  # the run's own
    seeds: list[int]
    batch_size: PositiveInt
    splits: list[tuple[str, str]]  # (dataset, split), in a fixed order
    datasets: dict[str, DatasetConfig]  # every dataset of `splits`, `publish` left out

"""What `transfer@<run>` reads: the run's transfer targets with their defaults resolved,
the probes' settings, and the target datasets' params (fine-tuning reads their shards)."""

from __future__ import annotations

from pipeline.params.base import PositiveInt, Strict
from pipeline.params.data import DatasetConfig
from pipeline.params.evaluation import (
    FinetuneConfig,
    KNNConfig,
    LinearProbeConfig,
    LowShotConfig,
)


class Transfer(Strict):
    """A resolved transfer target: the probe trains on `train_split` of `dataset` and
    tests on its `test_split`; `name` keys its metrics. `finetune.epochs > 0` adds
    fine-tuning of the whole encoder on the same split pair."""

    name: str
    dataset: str
    train_split: str
    test_split: str
    finetune: FinetuneConfig


class TransferParams(Strict):
    seeds: list[int]
    targets: list[Transfer]
    linear: LinearProbeConfig
    knn: KNNConfig
    low_shot: LowShotConfig
    datasets: dict[str, DatasetConfig]  # every target's dataset, `publish` left out
    memory_budget_mb: PositiveInt  # fine-tuning's training split held in memory up to this
    shuffle_buffer: PositiveInt  # images buffered when fine-tuning streams it

"""What `pretrain@<run>` reports per seed (results/pretrain/<run>.json; it has timings, so it
is a plain output, not a DVC metric)."""

from __future__ import annotations

from pipeline.metrics.base import StageMetrics


class PretrainMetrics(StageMetrics):
    epochs: int
    final_loss: float | None
    train_seconds: float
    monitor_seconds: float
    images_per_second: float | None

"""What `pretrain@<run>` reports per seed (metrics/pretrain/<run>.json)."""

from __future__ import annotations

from pipeline.metrics.base import StageMetrics


class PretrainMetrics(StageMetrics):
    epochs: int
    final_loss: float | None
    train_seconds: float
    monitor_seconds: float
    images_per_second: float | None

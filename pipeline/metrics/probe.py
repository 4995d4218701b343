"""What `probe@<run>` reports per seed (results/probe/<run>.json; its headline in
metrics/probe/<run>.json). Metric names that depend on params (kNN at each
`evaluate.knn.ks`, low-shot at each fraction) come from `probe_metric_names`, which the
probe and the report share."""

from __future__ import annotations

from pipeline.metrics.base import StageMetrics
from pipeline.params.evaluation import KNNConfig, LowShotConfig


class ProbeMetrics(StageMetrics):
    """Linear probe (weight decay chosen on a validation split), kNN, low-shot."""

    linear_top1: float
    linear_top5: float
    linear_weight_decay: float
    train_size: int
    test_size: int
    num_classes: int


def percent(fraction: float) -> str:
    """0.01 -> '1pct', 0.1 -> '10pct', 0.005 -> '0.5pct' (metric-name friendly)."""
    return f"{fraction * 100:g}pct"


def probe_headline(metrics: ProbeMetrics, knn: KNNConfig) -> dict[str, float]:
    """The numbers `dvc metrics` shows: linear and kNN top-1 (kNN at the first k, as the
    report compares them)."""
    knn_top1 = f"knn{knn.ks[0]}_top1"
    return {"linear_top1": metrics.linear_top1, knn_top1: getattr(metrics, knn_top1)}


def probe_metric_names(knn: KNNConfig, low_shot: LowShotConfig) -> list[str]:
    """The accuracy metrics a probe writes for these evaluation params, in report order."""
    return ["linear_top1", "linear_top5", *(f"knn{k}_top1" for k in knn.ks),
            f"majority{knn.majority_k}nn_top1",
            *(f"lowshot{percent(f)}_top1" for f in low_shot.fractions)]

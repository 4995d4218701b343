"""What `geometry@<run>` reports per seed (results/geometry/<run>.json; its headline in
metrics/geometry/<run>.json)."""

from __future__ import annotations

from pipeline.metrics.base import StageMetrics


class GeometryMetrics(StageMetrics):
    """Class separation and crowding of the test features, and label-free monitors."""

    intra_class_variance: float
    inter_class_distance: float
    min_inter_class_distance: float
    crowding_index: float
    nc1: float
    effective_rank: float
    uniformity: float
    nearest_class_mean_accuracy: float
    silhouette: float
    alignment: float
    rankme: float | None = None
    alpha_req: float | None = None  # NaN where the features span fewer than 6 directions
    feature_std: float | None = None
    lidar: float | None = None


HEADLINE = ("crowding_index", "nc1", "rankme")  # what `dvc metrics` shows


def geometry_headline(metrics: GeometryMetrics) -> dict[str, float | None]:
    return {name: getattr(metrics, name) for name in HEADLINE}

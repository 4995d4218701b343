"""What `geometry@<run>` reads: the run's dataset and views (alignment and LiDAR encode
two augmented views of each test image), the seeds and the geometry settings."""

from __future__ import annotations

from pipeline.params.base import PositiveInt, Strict
from pipeline.params.evaluation import GeometryConfig
from pipeline.params.methods import ViewsConfig


class GeometryParams(Strict):
    dataset: str
    seeds: list[int]
    views: ViewsConfig
    batch_size: PositiveInt
    geometry: GeometryConfig

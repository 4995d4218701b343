"""What `shard@<dataset>` reads: the dataset's source, split, shard size and scale
controls (not where it is published, which changes no shard)."""

from __future__ import annotations

from pipeline.params.base import Strict
from pipeline.params.data import DatasetConfig


class ShardParams(Strict):
    dataset: DatasetConfig  # `publish` left out

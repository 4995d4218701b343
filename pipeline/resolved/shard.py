"""What `shard@<dataset>` reads: the dataset's source, split, shard size and scale
controls, and the URL it writes the shards to (`datasets.<name>.publish.url`; null: to
data/shards/<name>). Where readers read them from changes no shard, so it is left out."""

from __future__ import annotations

from pipeline.params.base import Strict
from pipeline.params.data import DatasetConfig


class ShardParams(Strict):
    dataset: DatasetConfig  # `publish` left out
    upload_url: str | None = None  # where the shards are written, manifest last

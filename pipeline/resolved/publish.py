"""What `publish@<dataset>` reads: where to copy the shards (null: nowhere)."""

from __future__ import annotations

from pipeline.params.base import Strict


class PublishParams(Strict):
    url: str | None

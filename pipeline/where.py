"""Where the stages read a dataset's shards: data/shards/<dataset>, or the URL of its
`datasets.<name>.publish` section.

That decides no result (the same shards give the same bytes from any URL, checked against
the local manifest), so no stage declares it in dvc.yaml: a stage validates just these
sections of the params file it was given, and reads its resolved params (what it
computes) from resolved/. The stages that run on Ray (shard, pretrain, features) read
`ray:` the same way (`pipeline.params.ray.load_ray`, `pipeline.located.locate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.data.publish import shard_location
from pipeline.params.base import Strict, section, validate_section
from pipeline.params.data import PublishConfig


class Where(Strict):
    publish: dict[str, PublishConfig | None] = {}  # by dataset

    def shards(self, dataset: str) -> str:
        """Where a dataset's shards are read: data/shards/<dataset> or its published URL."""
        return shard_location(dataset, self.publish.get(dataset))


def load_where(data: Any, source: str | Path) -> Where:
    """Each `datasets.<name>.publish` section of parsed params YAML, validated; a bad value
    is a ParamsError naming its key in `source`."""
    datasets = section(data, "datasets")
    return Where(publish={
        name: validate_section(PublishConfig | None, section(datasets, name, "publish"),
                               f"datasets.{name}.publish", str(source))
        for name in (datasets if isinstance(datasets, dict) else {})})

"""A driver process for tests/cluster/test_ray_features.py: joins the cluster at argv[1]
and shards the embedded digits dataset (as the session's `digits_shards` fixture does)
into argv[2] by Ray tasks. A user error is one line and exit 2, as in a stage."""

from __future__ import annotations

from pathlib import Path

from driver import run_driver

from pipeline.data.ray_shards import on_ray
from pipeline.data.shards import write_shards
from pipeline.data.sources import load_source, make_splits
from pipeline.params.data import DigitsSource, SplitConfig


def shard_digits(out: str) -> None:
    source = load_source(DigitsSource(name="digits"))
    splits = make_splits(source, SplitConfig(heldout_classes=[7, 8, 9]))
    Path(out).mkdir()
    write_shards(splits, source.class_names, Path(out), 500, {"name": "digits"},
                 runner=on_ray)


if __name__ == "__main__":
    run_driver(shard_digits)

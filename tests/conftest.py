"""Shared fixtures: one real local Ray cluster per test session, small datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (2 CPUs, dashboard on 127.0.0.1), started once per session.

    Started exactly as the pretrain stage starts one; end-to-end stages join it by address.
    """
    import ray

    from pipeline.params import RayConfig
    from pipeline.train.launcher import init_ray

    init_ray(RayConfig(address="local"), num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory) -> Path:
    """The embedded default sharded once: train/test over digits 0-6, transfer over 7-9."""
    from pipeline.data.shards import write_shards
    from pipeline.data.sources import load_source, make_splits
    from pipeline.params import DigitsSource, SplitConfig

    source = load_source(DigitsSource(name="digits"))
    splits = make_splits(source, SplitConfig(heldout_classes=[7, 8, 9]))
    out = tmp_path_factory.mktemp("shards")
    write_shards(splits, source.class_names, out, 500, {"name": "digits"})
    return out

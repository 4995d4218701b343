"""`ray:`: where sharding, pretraining and feature extraction run. Only `num_workers`
decides a result (pretraining's ranks: each draws its own views and, streamed, reads its
own shards), so the params stage writes it into resolved/pretrain/<run>.json, which
pretrain@ declares; the rest decides none (a run gives the same shards, encoder and
features on any cluster), and the stages read it from params.yaml without declaring it in
dvc.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.params.base import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Strict,
    section,
    validate_section,
)


class RayConfig(Strict):
    """Where sharding, pretraining and feature extraction run. `local` joins the cluster
    `scripts/repro.sh` holds open (`RAY_ADDRESS`) or starts an embedded single-machine one.
    Feature extraction runs one task per shard, each with a worker's resources; sharding
    one task of one CPU per shard."""

    address: str = "local"
    num_workers: PositiveInt = 1  # pretraining's Ray Train workers (ranks); reruns pretrain@
    cpus_per_worker: PositiveInt = 1  # also each feature-extraction task's CPUs (threads)
    use_gpu: bool = False  # pretraining and feature extraction on GPUs
    gpus_per_worker: PositiveFloat = 1.0  # also each feature-extraction task's GPU share
    storage_path: str = "ray_results"
    max_failures: NonNegativeInt = 0  # worker-group restarts from the last checkpoint


def load_ray(data: Any, source: str | Path) -> RayConfig:
    """The `ray:` section of parsed params YAML, validated on its own (pretraining reads it
    without declaring it); a bad value is a ParamsError naming its key in `source`."""
    return validate_section(RayConfig, section(data, "ray") or {}, "ray", str(source))

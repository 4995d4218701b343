"""Feature-extraction throughput by Ray tasks (one per shard) with 1 and 2 workers of one
CPU each, on a simulated cluster (`ray.cluster_utils`: a head without CPUs and one or two
1-CPU worker nodes), against the single-process path on one thread.

Workload: 16 synthetic shards of 256 random 32x32 RGB images (raw members), small_cnn
width 32, batch 64. Each configuration runs once untimed (worker start-up, imports) and
is then timed over all shards.

    python -m benchmarks.ray_features [--out benchmarks/results/ray_features.json]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.record import run_benchmark, scaling, simulated_cluster
from pipeline.data.reader import split_shards
from pipeline.data.shards import write_shards
from pipeline.data.sources import ImageSet
from pipeline.evaluate.ray_features import ShardJob, ray_extract
from pipeline.nets.backbones import Encoder
from pipeline.nets.extract import shard_features
from pipeline.params.methods import SmallCNNBackbone

SHARDS, PER_SHARD, SIDE, BATCH = 16, 256, 32, 64


def write_data(directory: Path) -> Path:
    rng = np.random.default_rng(0)
    count = SHARDS * PER_SHARD
    images = rng.integers(0, 256, size=(count, SIDE, SIDE, 3), dtype=np.uint8)
    labels = np.arange(count, dtype=np.int64) % 10
    write_shards({"train": ImageSet(images, labels, np.arange(count))},
                 [str(c) for c in range(10)], directory, PER_SHARD, {"name": "bench"})
    return directory


def encoder() -> Encoder:
    torch.manual_seed(0)
    return Encoder(SmallCNNBackbone(name="small_cnn", width=32), 3, [0.5] * 3, [0.25] * 3)


def ray_features(shards, decoding) -> torch.Tensor:
    """The features stage's extraction (`ray_extract`, one task per shard), concatenated."""
    jobs = [ShardJob("bench", shard, decoding) for shard in shards]
    return torch.cat([features for _, features, _ in ray_extract({"bench": encoder()}, jobs,
                                                                 BATCH)])


def on_ray(shard_dir: Path, nodes: int) -> dict[str, float]:
    """Images/s of `ray_extract` on `nodes` 1-CPU nodes (after one untimed pass)."""
    with simulated_cluster(nodes):
        shards, count, decoding = split_shards(shard_dir, ["train"])
        ray_features(shards, decoding)
        started = time.perf_counter()
        features = ray_features(shards, decoding)
        seconds = time.perf_counter() - started
    return {"images": count, "seconds": seconds, "images_per_second": count / seconds,
            "checksum": float(features.double().sum())}


def single_process(shard_dir: Path) -> dict[str, float]:
    torch.set_num_threads(1)
    shards, count, decoding = split_shards(shard_dir, ["train"])
    shard_features(encoder(), shards[:1], decoding, BATCH, "cpu")
    started = time.perf_counter()
    features, _ = shard_features(encoder(), shards, decoding, BATCH, "cpu")
    seconds = time.perf_counter() - started
    return {"images": count, "seconds": seconds, "images_per_second": count / seconds,
            "checksum": float(features.double().sum())}


def measure(directory: Path) -> dict[str, Any]:
    """The single-process path on one thread, then Ray tasks on 1 and 2 workers."""
    shard_dir = write_data(directory)
    return {"single_process_1_thread": single_process(shard_dir),
            **scaling(lambda nodes: on_ray(shard_dir, nodes), "worker")}


if __name__ == "__main__":
    run_benchmark("ray_features", f"{SHARDS} shards x {PER_SHARD} random {SIDE}x{SIDE} RGB "
                                  f"images, small_cnn width 32, batch {BATCH}, CPU", measure)

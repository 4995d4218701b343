"""Sharding throughput by Ray tasks (one per shard) on 1 and 2 one-CPU nodes of a
simulated cluster (`ray.cluster_utils`: a head without CPUs and one or two 1-CPU worker
nodes), against one local process (`shards.in_process`).

Workload: 16 shards of 256 random 96x96 RGB images (arrays), resized to 32x32 while
sharding (`image_size: 32`, the CPU work of a shard), written raw. Each configuration runs
once untimed (worker start-up, imports, the source into the object store) and is then
timed; every configuration's shards must have the same sha256 as the local ones.

    python -m benchmarks.ray_shards [--out benchmarks/results/ray_shards.json]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.record import run_benchmark, scaling, simulated_cluster
from pipeline.data.ray_shards import on_ray
from pipeline.data.shards import write_shards
from pipeline.data.sources import ImageSet

SHARDS, PER_SHARD, SIDE, SIZE = 16, 256, 96, 32


def source() -> dict[str, ImageSet]:
    rng = np.random.default_rng(0)
    count = SHARDS * PER_SHARD
    images = rng.integers(0, 256, size=(count, SIDE, SIDE, 3), dtype=np.uint8)
    return {"train": ImageSet(images, np.arange(count, dtype=np.int64) % 10,
                              np.arange(count))}


def shard_once(out: Path, **how) -> tuple[float, list[str]]:
    """Seconds to write every shard into a fresh `out`, and the shards' sha256."""
    out.mkdir(parents=True)
    started = time.perf_counter()
    manifest = write_shards(source(), [str(c) for c in range(10)], out, PER_SHARD,
                            {"name": "bench"}, image_size=SIZE, **how)
    seconds = time.perf_counter() - started
    return seconds, [r["sha256"] for r in manifest["splits"]["train"]["shards"]]


def timed(directory: Path, **how) -> tuple[dict[str, float], list[str]]:
    shard_once(directory / "warm-up", **how)
    seconds, digests = shard_once(directory / "timed", **how)
    images = SHARDS * PER_SHARD
    return {"images": images, "seconds": seconds, "images_per_second": images / seconds}, digests


def on_nodes(directory: Path, nodes: int) -> tuple[dict[str, float], list[str]]:
    with simulated_cluster(nodes):
        return timed(directory, runner=on_ray)


def measure(directory: Path) -> dict[str, Any]:
    """One process, then Ray tasks on 1 and 2 nodes, each checked against its sha256."""
    local, reference = timed(directory / "local")

    def on_ray_nodes(nodes: int) -> dict[str, Any]:
        figures, digests = on_nodes(directory / f"ray{nodes}", nodes)
        return {**figures, "same_sha256_as_local": digests == reference}

    return {"local_1_process": local, **scaling(on_ray_nodes, "node")}


if __name__ == "__main__":
    run_benchmark("ray_shards", f"{SHARDS} shards x {PER_SHARD} random {SIDE}x{SIDE} RGB "
                                f"arrays, resized to {SIZE}x{SIZE}, raw members", measure)

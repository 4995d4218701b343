"""Sharding throughput by Ray tasks (one per shard) on 1 and 2 one-CPU nodes of a
simulated cluster (`ray.cluster_utils`: a head without CPUs and one or two 1-CPU worker
nodes), against one local process (`shards.workers: 1`).

Workload: 16 shards of 256 random 96x96 RGB images (arrays), resized to 32x32 while
sharding (`image_size: 32`, the CPU work of a shard), written raw. Each configuration runs
once untimed (worker start-up, imports, the source into the object store) and is then
timed; every configuration's shards must have the same sha256 as the local ones.

    python -m benchmarks.ray_shards [--out benchmarks/results/ray_shards.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.record import machine, simulated_cluster, write_results
from pipeline.data.ray_shards import on_ray
from pipeline.data.shards import write_shards
from pipeline.data.sources import ImageSet

RESULTS = Path(__file__).parent / "results" / "ray_shards.json"
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = {"command": "python -m benchmarks.ray_shards", "machine": machine(),
               "workload": f"{SHARDS} shards x {PER_SHARD} random {SIDE}x{SIDE} RGB arrays, "
                           f"resized to {SIZE}x{SIZE}, raw members"}
    with tempfile.TemporaryDirectory() as tmp:
        results["local_1_process"], reference = timed(Path(tmp) / "local", workers=1)
        for nodes in (1, 2):
            results[f"ray_{nodes}_node"], digests = on_nodes(Path(tmp) / f"ray{nodes}", nodes)
            results[f"ray_{nodes}_node"]["same_sha256_as_local"] = digests == reference
    results["speedup_2_over_1_node"] = (results["ray_2_node"]["images_per_second"]
                                        / results["ray_1_node"]["images_per_second"])
    write_results(args.out, results)


if __name__ == "__main__":
    main()

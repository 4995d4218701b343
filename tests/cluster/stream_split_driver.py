"""A Ray driver for tests/cluster/test_multinode.py: one streaming-reader rank on each of the
given nodes, each with two loader processes, reads one epoch of published shards; prints
JSON [[node id, [labels of each batch]], ...] in rank order.

    python tests/cluster/stream_split_driver.py ADDRESS SHARDS_URL NODE_ID,NODE_ID,...
"""

from __future__ import annotations

import json
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import pipeline

BATCH_PER_RANK = 10
LOADER_WORKERS = 2


def read_epoch(url: str, rank: int, world: int) -> tuple[str, list[list[int]]]:
    """Rank `rank` of `world`: the labels of every batch of its first epoch."""
    from pipeline.data.loader import StreamLoader, StreamSpec
    from pipeline.data.reader import split_shards

    shards, total, decoding = split_shards(url, ["train"])
    spec = StreamSpec(tuple(shards), decoding, BATCH_PER_RANK, rank, world, shuffle_buffer=0)
    steps = total // (BATCH_PER_RANK * world)
    loader = StreamLoader(spec, LOADER_WORKERS)
    return (ray.get_runtime_context().get_node_id(),
            [labels.tolist() for _, labels in loader.epoch(0, steps)])


def main() -> None:
    address, url, nodes = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    ray.init(address=address, runtime_env={"py_modules": [pipeline]})
    task = ray.remote(num_cpus=1)(read_epoch)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            .remote(url, rank, len(nodes)) for rank, node in enumerate(nodes)]
    print(json.dumps(ray.get(refs, timeout=300)))


if __name__ == "__main__":
    main()

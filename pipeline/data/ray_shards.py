"""Sharding on Ray: one task per shard across the cluster's nodes.

Each shard is a fixed slice of a split in key order (`shards.write_shards`), written by
the same `shards.write_shard` that `shards.in_process` runs, so the bytes, the sha256 and
the manifest are the same whoever writes it. A task writes its shard in a directory of its own node;
with `upload_url` it uploads it there (nothing comes back but the record), otherwise it
returns the bytes and the driver writes them into the output directory, one shard at a
time, in order. The source travels once per node through the object store (`ray.put`):
arrays for array sources, paths for file sources (which every node must then reach). A
task lost with its node is re-run elsewhere; a user error inside a task (an unreadable
image, an unreachable store) is raised on the driver as itself.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from pipeline.cluster import cluster_slots, ordered_results
from pipeline.data import shards
from pipeline.data.storage import ReadPolicy, configure_reads, read_policy


def write_on_worker(job: shards.ShardJob, task: shards.ShardTask, reads: dict[str, Any]
                    ) -> dict[str, Any]:
    """What a task runs: one shard in a directory of this node; its record, with the
    shard's bytes (`_bytes`) unless it was uploaded."""
    configure_reads(ReadPolicy(**reads))
    with tempfile.TemporaryDirectory() as local:
        record = shards.write_shard(dataclasses.replace(job, out_dir=Path(local)), task)
        if job.upload_url is None:
            record["_bytes"] = (Path(local) / record["file"]).read_bytes()
    return record


def on_ray(job: shards.ShardJob, tasks: list[shards.ShardTask]) -> list[dict[str, Any]]:
    """`write_shards`'s runner on the connected Ray cluster (1 CPU per task, at most twice
    as many tasks in flight as it runs at once)."""
    import ray

    job_ref = ray.put(job)
    reads = read_policy()
    records = []
    results = ordered_results(write_on_worker, ((job_ref, task, reads) for task in tasks),
                              max(2, 2 * cluster_slots()))
    for record in results:
        payload = record.pop("_bytes", None)
        if payload is not None:
            (job.out_dir / record["file"]).write_bytes(payload)
        records.append(record)
    return records

"""Feature extraction on Ray: one Ray task per input shard, results in shard order, each
written as the features stage's feature shard as it arrives.

Why Ray tasks over shards, not Ray Data: the unit of work is already the shard, read by
the bounded, sha256-checking reader (`pipeline.data.reader`) in fixed per-shard batches,
so a task computes exactly one shard's batches wherever it runs, and the result of a split
is its tasks' outputs in the order of the shard list: deterministic and bitwise equal to
`shard_features` in one process on CPU (at the task's thread count), however many workers
or nodes run it. Ray Data's `read_webdataset` would read the tars with its own reader (no
manifest digests, no per-shard batches) and reorder blocks unless told not to. A task lost
with its node is retried elsewhere by Ray (`max_retries`) and, being a pure function of
its shard, returns the same features.

The driver holds no images: at most `in_flight` tasks run or wait, and it takes their
results (one shard's features each) in order, writing each before the next. With
`ray.address: local` the same code runs on the local Ray (the one `scripts/repro.sh`
holds open, or an embedded one): there is no other extraction path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.cluster import cluster_slots, ordered_results
from pipeline.data.codec import Decoding
from pipeline.data.reader import Shard, shards_batches
from pipeline.data.storage import ReadPolicy, configure_reads, read_policy
from pipeline.errors import UserError, one_line
from pipeline.evaluate.features import FeatureShard, write_feature_shard, write_manifest
from pipeline.nets.backbones import Encoder
from pipeline.nets.extract import batches_features


@dataclass(frozen=True)
class Resources:
    """What one extraction task asks Ray for: CPUs (its torch threads), and a GPU share."""

    cpus: int = 1
    gpus: float = 0.0


@dataclass(frozen=True)
class ShardJob:
    """One input shard through one encoder (named by its file, for errors)."""

    encoder: str
    shard: Shard
    decoding: Decoding


def extract_shard(encoder: Encoder, job: ShardJob, batch_size: int, use_gpu: bool,
                  reads: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """One shard's features and labels on this process's device, read with the driver's
    retry policy (`reads`, `storage.read_policy()`); what a task runs.

    An encoder that cannot take the shard's images (other channels, too small an image)
    is a UserError naming the encoder and the shard, raised here, inside the worker.
    """
    if encoder.in_channels != job.decoding.channels:
        raise UserError(f"{job.encoder}: the encoder takes {encoder.in_channels}-channel "
                        f"images, {job.shard.url} has {job.decoding.channels}")
    configure_reads(ReadPolicy(**reads))
    device = torch.device("cuda") if use_gpu else torch.device("cpu")
    try:
        return batches_features(encoder, shards_batches([job.shard], job.decoding,
                                                        batch_size), device)
    except RuntimeError as exc:  # a forward pass the encoder cannot do on these images
        raise UserError(f"{job.encoder}: cannot encode {job.shard.url} "
                        f"({one_line(str(exc))[:200]})") from None


def default_in_flight(resources: Resources) -> int:
    """Twice as many tasks as the cluster can run at once: workers never wait for the
    driver, and the object store holds a bounded number of results."""
    return max(2, 2 * cluster_slots(resources.cpus, resources.gpus))


def ray_extract(encoders: dict[str, Encoder], jobs: Iterable[ShardJob], batch_size: int,
                resources: Resources = Resources(), in_flight: int | None = None
                ) -> Iterator[tuple[ShardJob, torch.Tensor, torch.Tensor]]:
    """Each job's features and labels, in the order of `jobs`, computed by Ray tasks on
    the connected cluster with at most `in_flight` submitted and not yet taken.

    A user error inside a task (a corrupt or unreachable shard, an encoder that does not
    fit the images) is raised here as itself, so the stage ends with its one line.
    """
    import ray

    refs = {name: ray.put(encoder.cpu().eval()) for name, encoder in encoders.items()}
    reads = read_policy()
    jobs = list(jobs)
    calls = ((refs[job.encoder], job, batch_size, resources.gpus > 0, reads) for job in jobs)
    results = ordered_results(extract_shard, calls, in_flight or default_in_flight(resources),
                              resources.cpus, resources.gpus)
    for job, (features, labels) in zip(jobs, results, strict=True):
        yield job, features, labels


@dataclass(frozen=True)
class SplitJob:
    """One split's features through one encoder, written to `out` (a directory)."""

    encoder: str
    shards: list[Shard]
    decoding: Decoding
    out: Path


def write_split_features(encoders: dict[str, Encoder], splits: list[SplitJob],
                         batch_size: int, resources: Resources = Resources(),
                         in_flight: int | None = None) -> None:
    """Every split's feature shards and manifest, extracted by Ray tasks over all splits'
    shards at once (so small splits do not leave workers idle); the driver holds one
    shard's features at a time."""
    jobs = [(split, ShardJob(split.encoder, shard, split.decoding))
            for split in splits for shard in split.shards]
    written: dict[Path, list[FeatureShard]] = {split.out: [] for split in splits}
    for split in splits:
        split.out.mkdir(parents=True, exist_ok=True)
        if not split.shards:
            write_manifest(split.out, [], encoders[split.encoder].feature_dim)
    results = ray_extract(encoders, (job for _, job in jobs), batch_size, resources,
                          in_flight)
    for (split, _), (job, features, labels) in zip(jobs, results, strict=True):
        written[split.out].append(write_feature_shard(split.out, job.shard.url, features,
                                                      labels))
        if len(written[split.out]) == len(split.shards):
            write_manifest(split.out, written[split.out],
                           encoders[split.encoder].feature_dim)

"""Streaming pretraining batches from shards: webdataset pipelines that never hang a rank.

Readers are (Ray rank x loader worker). Every cycle, all readers draw the same seeded
permutation of the shards and reader r takes positions r, r + R, ... (wrapping when there
are fewer shards than readers), so each cycle covers every shard once and no reader is
ever left without data. The stream is infinite; an epoch is an explicit number of batches,
total images // global batch size, the same on every rank, so collective operations never
wait on a rank that ran out of shards. (The shuffle buffer carries samples over the epoch
boundary, so with shuffling an epoch is nearly, not exactly, one pass over the data.)

A shard that cannot be read, decodes badly or holds fewer samples than the manifest says
is corrupt: with `on_corrupt: error` the run stops with one line naming it; with `skip`
it is dropped and counted (every skipped read), and the run fails only if every shard is.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.data.codec import Decoding
from pipeline.data.shards import check_split, decode_sample, manifest_decoding, read_manifest
from pipeline.data.storage import child, is_url
from pipeline.data.tario import shard_samples
from pipeline.errors import UserError


@dataclass(frozen=True)
class Shard:
    url: str
    count: int
    sha256: str = ""  # checked on every read when set


@dataclass(frozen=True)
class StreamSpec:
    """What one rank streams: its shards, batch size, position and seeds."""

    shards: tuple[Shard, ...]
    decoding: Decoding
    batch_size: int  # per rank
    rank: int = 0
    world: int = 1
    seed: int = 0
    shuffle_buffer: int = 5000
    on_corrupt: Literal["error", "skip"] = "error"


@dataclass(frozen=True)
class _Skipped:
    url: str


@dataclass(frozen=True)
class _Failed:
    message: str


@dataclass(frozen=True)
class Batch:
    images: torch.Tensor  # uint8 [B, C, H, W]
    labels: torch.Tensor  # int64 [B]
    skipped: int  # corrupt shard reads skipped since the previous batch of this reader

    def pin_memory(self) -> Batch:
        """Page-locked copy, called by DataLoader's pin thread (`pin_memory=True` pins only
        the types that define this): the `non_blocking` copies to the GPU then overlap."""
        return replace(self, images=self.images.pin_memory(), labels=self.labels.pin_memory())


def split_shards(shard_dir: str | Path, splits: list[str]) -> tuple[list[Shard], int, Decoding]:
    """Shards (absolute paths or URLs) and image count of the splits, and how to decode
    them."""
    location = str(shard_dir) if is_url(shard_dir) else str(Path(shard_dir).resolve())
    manifest = read_manifest(location)
    shards = []
    for split in splits:
        check_split(location, manifest, split)
        shards += [Shard(child(location, r["file"]), int(r["count"]), r["sha256"])
                   for r in manifest["splits"][split]["shards"]]
    return shards, sum(s.count for s in shards), manifest_decoding(manifest)


def reader_shards(num_shards: int, reader: int, readers: int, seed: int, cycle: int
                  ) -> list[int]:
    """The shard indices reader `reader` of `readers` reads in `cycle`.

    Over all readers each cycle covers every shard at least once; with fewer shards than
    readers, readers share shards instead of idling.
    """
    order = np.random.default_rng([seed, cycle]).permutation(num_shards)
    return [int(order[position % num_shards])
            for position in range(reader, max(num_shards, readers), readers)]


def _reader_position(spec: StreamSpec) -> tuple[int, int]:
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    return spec.rank * workers + worker, spec.world * workers


def _read_shard(shard: Shard, decoding: Decoding) -> Iterator[tuple[np.ndarray, int]]:
    """Decoded samples of one shard; raises if it is unreadable or holds the wrong count.

    A half-yielded shard is possible (corruption found late); its samples stay valid.
    """
    found = 0
    for sample in shard_samples(shard.url, shard.sha256):
        yield decode_sample(sample, decoding)
        found += 1
    if found != shard.count:
        raise ValueError(f"{found} samples, the manifest says {shard.count} (truncated?)")


def _samples(spec: StreamSpec) -> Iterator[Any]:
    """This reader's infinite stream of (image, label), with skip/failure markers."""
    reader, readers = _reader_position(spec)
    corrupt: set[str] = set()
    cycle = 0
    while True:
        for index in reader_shards(len(spec.shards), reader, readers, spec.seed, cycle):
            shard = spec.shards[index]
            try:
                yield from _read_shard(shard, spec.decoding)
            except Exception as exc:  # any failure inside a shard means it is corrupt
                if spec.on_corrupt == "error":  # unreachable shards name themselves
                    reason = exc if isinstance(exc, UserError) else (
                        f"{shard.url}: corrupt shard ({exc})")
                    yield _Failed(f"{reason}; set data.on_corrupt: skip to drop it")
                    return
                corrupt.add(shard.url)
                yield _Skipped(shard.url)
                if len(corrupt) == len(spec.shards):
                    yield _Failed(f"{shard.url.rpartition('/')[0]}: every shard is corrupt")
                    return
        cycle += 1


def _shuffled(spec: StreamSpec, samples: Iterator[Any]) -> Iterator[Any]:
    reader, _ = _reader_position(spec)
    if spec.shuffle_buffer <= 1:
        return samples
    rng = random.Random(spec.seed * 1_000_003 + reader)
    return wds.shuffle(spec.shuffle_buffer, initial=spec.shuffle_buffer, rng=rng)(samples)


def _batches(spec: StreamSpec, samples: Iterator[Any]) -> Iterator[Batch | _Failed]:
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped = 0
    for item in samples:
        if isinstance(item, _Failed):
            yield item
            return
        if isinstance(item, _Skipped):
            skipped += 1
            continue
        images.append(item[0])
        labels.append(item[1])
        if len(images) == spec.batch_size:
            stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
            yield Batch(stacked, torch.tensor(labels, dtype=torch.int64), skipped)
            images, labels, skipped = [], [], 0


class ShardStream(IterableDataset):
    """The webdataset pipeline of one reader: shards -> samples -> seeded shuffle -> batches."""

    def __init__(self, spec: StreamSpec):
        super().__init__()
        if not spec.shards:
            raise UserError("no shards to stream")
        self.spec = spec

    def __iter__(self) -> Iterator[Batch | _Failed]:
        pipeline = wds.DataPipeline(
            lambda: _samples(self.spec),
            lambda samples: _shuffled(self.spec, samples),
            lambda samples: _batches(self.spec, samples),
        )
        return iter(pipeline)


class StreamLoader:
    """Batches for one rank from `num_workers` loader processes, epoch by epoch.

    The worker processes persist and their streams continue across epochs; `epoch(steps)`
    takes exactly `steps` batches, so every rank runs the same number of steps.
    """

    def __init__(self, spec: StreamSpec, num_workers: int, pin_memory: bool = False):
        self.loader = DataLoader(ShardStream(spec), batch_size=None, num_workers=num_workers,
                                 persistent_workers=num_workers > 0, pin_memory=pin_memory,
                                 prefetch_factor=4 if num_workers else None)
        self._iterator: Iterator[Batch | _Failed] | None = None
        self.skipped_shards = 0

    def epoch(self, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._iterator is None:
            self._iterator = iter(self.loader)
        for _ in range(steps):
            item = next(self._iterator)
            if isinstance(item, _Failed):
                raise UserError(item.message)
            self.skipped_shards += item.skipped
            yield item.images, item.labels

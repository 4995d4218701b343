"""Streaming pretraining batches from shards: webdataset pipelines that never hang a rank.

Readers are (Ray rank x loader worker). Every cycle, all readers draw the same seeded
permutation of the shards and reader r takes positions r, r + R, ... (wrapping when there
are fewer shards than readers), so each cycle covers every shard once and no reader is
ever left without data. A reader's stream is endless; an epoch is an explicit number of
batches, total images // global batch size, the same on every rank, so collective
operations never wait on a rank that ran out of shards.

Each epoch starts every reader afresh: epoch e's shard order and shuffle draws are seeded
by (seed, e, reader), and its shuffle buffer starts empty. So the batches of an epoch are
a function of the params, the epoch and the number of readers alone, and a run resumed at
an epoch boundary reads exactly what an uninterrupted one would. (The images still in the
buffers when an epoch's batches are taken are not seen that epoch, so with shuffling an
epoch is nearly, not exactly, one pass over the data.)

Memory per loader process is bounded by the shuffle buffer, the prefetched batches and
what the shard reader buffers for one shard, whatever the dataset's size.

A shard that cannot be read, decodes badly or holds fewer samples than the manifest says
is corrupt: with `on_corrupt: error` the run stops with one line naming it; with `skip`
it is dropped and counted (every skipped read), and the run fails only if every shard is.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.data.codec import Decoding
from pipeline.data.reader import Shard, read_shard, stack_images
from pipeline.errors import UserError


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
    epoch: int = 0  # seeds this epoch's shard order and shuffle draws


PREFETCH_BATCHES = 4  # batches each loader process prepares ahead


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


def reader_shards(num_shards: int, reader: int, readers: int, seed: int, cycle: int,
                  epoch: int = 0) -> list[int]:
    """The shard indices reader `reader` of `readers` reads in `cycle` of `epoch`.

    Over all readers each cycle covers every shard at least once; with fewer shards than
    readers, readers share shards instead of idling.
    """
    order = np.random.default_rng([seed, epoch, cycle]).permutation(num_shards)
    return [int(order[position % num_shards])
            for position in range(reader, max(num_shards, readers), readers)]


def _reader_position(spec: StreamSpec) -> tuple[int, int]:
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    return spec.rank * workers + worker, spec.world * workers


def _samples(spec: StreamSpec) -> Iterator[Any]:
    """This reader's infinite stream of (image, label), with skip/failure markers."""
    reader, readers = _reader_position(spec)
    corrupt: set[str] = set()
    cycle = 0
    while True:
        for index in reader_shards(len(spec.shards), reader, readers, spec.seed, cycle,
                                   spec.epoch):
            shard = spec.shards[index]
            try:
                yield from read_shard(shard, spec.decoding)
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
    rng = random.Random(f"{spec.seed}/{spec.epoch}/{reader}")  # str seeds: same everywhere
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
            yield Batch(stack_images(images), torch.tensor(labels, dtype=torch.int64), skipped)
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

    `epoch(e, steps)` starts the loader processes on epoch e's stream (see the module
    docstring), takes exactly `steps` batches, so every rank runs the same number of
    steps, and stops them.
    """

    def __init__(self, spec: StreamSpec, num_workers: int, pin_memory: bool = False):
        if not spec.shards:
            raise UserError("no shards to stream")
        self.spec, self.num_workers, self.pin_memory = spec, num_workers, pin_memory
        self.skipped_shards = 0

    def epoch(self, epoch: int, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(ShardStream(replace(self.spec, epoch=epoch)), batch_size=None,
                            num_workers=self.num_workers, pin_memory=self.pin_memory,
                            prefetch_factor=PREFETCH_BATCHES if self.num_workers else None)
        iterator = iter(loader)
        try:
            for _ in range(steps):
                item = next(iterator)
                if isinstance(item, _Failed):
                    raise UserError(item.message)
                self.skipped_shards += item.skipped
                yield item.images, item.labels
        finally:
            del iterator  # stops the loader processes


def stream_buffer_images(spec: StreamSpec, num_workers: int) -> int:
    """Images one rank's stream holds at most: per loader process (the rank itself when
    there are none) its shuffle buffer, one batch being filled and the prefetched ones."""
    batches = PREFETCH_BATCHES + 1 if num_workers else 1
    return max(num_workers, 1) * (spec.shuffle_buffer + batches * spec.batch_size)

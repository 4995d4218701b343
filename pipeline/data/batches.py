"""Pretraining batches for one rank, from memory or streamed from shards (`data.loader`).

Both give every rank `steps_per_epoch` = images // global batch size batches per epoch,
each of `batch_size // world` images, so distributed steps always line up, and both make
epoch e's batches a function of the params and e alone (for a given number of ranks and
loader processes), so resuming at an epoch boundary is exact. A checkpoint records that
position (`DataPosition`) and a resume that would read other batches stops with one line
naming the key. `auto` holds the splits in memory while they fit `data.memory_budget_mb`
decoded, and streams them above it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from pipeline.data.loader import StreamLoader, StreamSpec
from pipeline.data.reader import read_splits, split_bytes, split_shards
from pipeline.errors import UserError
from pipeline.params.training import RunConfig


@dataclass(frozen=True)
class DataPosition:
    """Where a rank's data stream stands at an epoch boundary, and all that its next
    batches depend on besides the params.

    Epoch e's stream is seeded by (seed, e, reader) and starts afresh (shard order,
    shuffle buffer, loader processes), so the reader seed state is a function of the epoch
    and the reader layout: the next batch is the first of `epoch + 1` for this layout.
    """

    epoch: int  # epochs whose batches were all taken
    loader: str  # memory | stream
    world: int  # ranks (ray.num_workers): each takes its slice of every global batch
    workers: int  # loader processes per rank (streamed; 0 in memory)

    def mismatch(self, now: DataPosition, run_name: str) -> str | None:
        """What differs from when this position was written, naming the key, if anything
        does: the resumed batches would then not be the uninterrupted run's."""
        keys = {"loader": f"runs.{run_name}.data.loader", "world": "ray.num_workers",
                "workers": f"runs.{run_name}.data.workers"}
        for name, key in keys.items():
            then, current = getattr(self, name), getattr(now, name)
            if then != current:
                return (f"written with {key}: {then}, this run has {current}, so its data "
                        f"would not continue exactly; set it back to {then}")
        return None


class Batches(Protocol):
    steps_per_epoch: int
    skipped_shards: int

    def position(self, epoch: int) -> DataPosition:
        """This rank's data position once `epoch` is complete."""
        ...

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images [B, C, H, W], labels [B]) on the training device."""
        ...


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> torch.Tensor:
    """[steps, batch_size] sample indices of one epoch, identical on every rank."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    steps = num_samples // batch_size
    return torch.randperm(num_samples, generator=generator)[: steps * batch_size].view(
        steps, batch_size)


class MemoryBatches:
    """Every rank holds the splits on its device, walks the same seeded permutation each
    epoch and takes its slice of every global batch: W workers see exactly the global
    batches one worker would."""

    skipped_shards = 0

    def __init__(self, run: RunConfig, shard_dir: str | Path, rank: int, world: int,
                 device: torch.device):
        data = read_splits(shard_dir, run.data.splits)
        self.images, self.labels = data.images.to(device), data.labels.to(device)
        self.batch_size, self.seed, self.device = run.train.batch_size, run.seed, device
        self.world = world
        self.local = slice(rank * (self.batch_size // world),
                           (rank + 1) * (self.batch_size // world))
        self.steps_per_epoch = len(self.labels) // self.batch_size

    def position(self, epoch: int) -> DataPosition:
        return DataPosition(epoch, "memory", self.world, 0)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # one copy of the epoch's indices to the device, not a blocking copy per step
        order = epoch_batches(len(self.labels), self.batch_size, self.seed, epoch)
        for index in order[:, self.local].to(self.device):
            yield self.images[index], self.labels[index]


def pins_memory(device: torch.device) -> bool:
    """Streamed batches are page-locked when they go to a GPU (asynchronous copies)."""
    return device.type == "cuda"


class StreamedBatches:
    """Webdataset streams (see pipeline.data.loader), moved to the device as they come."""

    def __init__(self, run: RunConfig, shard_dir: str | Path, rank: int, world: int,
                 device: torch.device):
        shards, total, decoding = split_shards(shard_dir, run.data.splits)
        spec = StreamSpec(tuple(shards), decoding, run.train.batch_size // world, rank, world,
                          run.seed, run.data.shuffle_buffer, run.data.on_corrupt)
        self.loader = StreamLoader(spec, run.data.workers, pin_memory=pins_memory(device))
        self.world, self.workers = world, run.data.workers
        self.steps_per_epoch = total // run.train.batch_size
        self.device = device

    def position(self, epoch: int) -> DataPosition:
        return DataPosition(epoch, "stream", self.world, self.workers)

    @property
    def skipped_shards(self) -> int:
        return self.loader.skipped_shards

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader.epoch(epoch, self.steps_per_epoch):
            yield (images.to(self.device, non_blocking=True),
                   labels.to(self.device, non_blocking=True))


def chosen_loader(run: RunConfig, shard_dir: str | Path) -> str:
    """`memory` or `stream`: what `data.loader` means for this run's data (see `auto`)."""
    if run.data.loader != "auto":
        return run.data.loader
    fits = split_bytes(shard_dir, run.data.splits) <= run.data.memory_budget_mb << 20
    return "memory" if fits else "stream"


def pretraining_batches(run: RunConfig, shard_dir: str | Path, rank: int, world: int,
                        device: torch.device) -> Batches:
    kind = MemoryBatches if chosen_loader(run, shard_dir) == "memory" else StreamedBatches
    batches = kind(run, shard_dir, rank, world, device)
    if batches.steps_per_epoch == 0:
        raise UserError(f"{shard_dir}: splits {run.data.splits} hold fewer images than one "
                        f"batch of {run.train.batch_size}")
    return batches

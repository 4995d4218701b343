"""Features of a frozen encoder, in eval mode, on the device evaluation computes on;
pretraining's online monitor and the evaluation stages both extract them this way.

Streamed: one shard at a time, in per-shard batches. Decoded images are held one batch at
a time (plus what the shard reader buffers for one shard), never a split: only the
features [N, D] grow with the data. Shards are extracted in fixed per-shard batches
(`pipeline.data.reader`), so the features of a list of shards are the concatenation of
each shard's own, whoever extracts them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from pipeline.data.codec import Decoding
from pipeline.data.reader import Shard, shards_batches, split_shards
from pipeline.data.shards import SplitTensors
from pipeline.device import evaluation_device
from pipeline.nets.backbones import Encoder

BLOCK_BYTES = 4 << 20  # RowBlocks' unit: served by mmap, outside the heap


class RowBlocks:
    """Rows (features, labels) gathered batch by batch into blocks of about 4 MiB.

    Keeping each batch's few rows as a tensor of its own puts one small long-lived
    allocation after every batch's large transient ones (images, activations); glibc then
    cannot give the freed memory between them back, and a process extracting a split grew
    by tens of MiB per 32 MiB of images (benchmarks/stage_memory.py). Blocks are
    allocated apart from the heap, so only the rows themselves grow with the data.
    """

    def __init__(self) -> None:
        self.blocks: list[torch.Tensor] = []
        self.filled = 0  # rows used in the last block

    def append(self, rows: torch.Tensor) -> None:
        while len(rows):
            if not self.blocks or self.filled == len(self.blocks[-1]):
                row_bytes = max(rows[0].numel() * rows.element_size(), 1)
                self.blocks.append(rows.new_empty((max(BLOCK_BYTES // row_bytes, 1),
                                                   *rows.shape[1:])))
                self.filled = 0
            block = self.blocks[-1]
            taken = min(len(rows), len(block) - self.filled)
            block[self.filled:self.filled + taken] = rows[:taken]
            self.filled, rows = self.filled + taken, rows[taken:]

    def tensor(self, empty: torch.Tensor) -> torch.Tensor:
        """All rows in one tensor (`empty` when there are none)."""
        if not self.blocks:
            return empty
        return torch.cat([*self.blocks[:-1], self.blocks[-1][: self.filled]])


@torch.no_grad()
def extract_features(encoder: Encoder, images: torch.Tensor, batch_size: int = 512,
                     device: str | torch.device | None = None) -> torch.Tensor:
    """Features [N, D] (float32, on CPU) of images [N, C, H, W], in eval mode, computed on
    `device` (default: `evaluation_device()`; the encoder is moved there).

    Images are uint8 (0..255) or float in [0, 1].
    """
    device = evaluation_device() if device is None else device
    encoder = encoder.to(device).eval()
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    chunks = [encoder(batch.to(device).float() / scale).float().cpu()
              for batch in images.split(batch_size)]
    if not chunks:
        return torch.empty(0, encoder.feature_dim)
    return torch.cat(chunks)


@torch.no_grad()
def batches_features(encoder: Encoder, batches: Iterable[SplitTensors],
                     device: str | torch.device | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, D] (float32, on CPU) and labels [N] of a stream of image batches, each
    batch one forward pass in eval mode on `device` (default: `evaluation_device()`)."""
    device = evaluation_device() if device is None else device
    encoder = encoder.to(device).eval()
    features, labels = RowBlocks(), RowBlocks()
    for batch in batches:
        features.append(encoder(batch.images.to(device).float() / 255.0).float().cpu())
        labels.append(batch.labels)
    return (features.tensor(torch.empty(0, encoder.feature_dim)),
            labels.tensor(torch.empty(0, dtype=torch.int64)))


def shard_features(encoder: Encoder, shards: Sequence[Shard], decoding: Decoding,
                   batch_size: int = 512, device: str | torch.device | None = None,
                   limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of one shard or a list of shards (in order), each shard in its
    own batches of `batch_size`; with `limit`, of the first `limit` images only.

    The unit a distributed extraction hands to each worker: concatenating the results of
    any division of `shards` into consecutive lists gives this call's result."""
    return batches_features(encoder, shards_batches(shards, decoding, batch_size, limit),
                            device)


def split_features(encoder: Encoder, shard_dir, split: str, batch_size: int = 512,
                   device: str | torch.device | None = None, limit: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of one split of a sharded dataset, streamed shard by shard."""
    shards, _, decoding = split_shards(shard_dir, [split])
    return shard_features(encoder, shards, decoding, batch_size, device, limit)

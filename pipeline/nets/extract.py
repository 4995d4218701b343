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
    features, labels = [], []
    for batch in batches:
        features.append(encoder(batch.images.to(device).float() / 255.0).float().cpu())
        labels.append(batch.labels)
    if not features:
        return torch.empty(0, encoder.feature_dim), torch.empty(0, dtype=torch.int64)
    return torch.cat(features), torch.cat(labels)


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

"""Frozen-encoder feature extraction, streamed: one shard at a time, in per-shard batches.

Decoded images are held one batch at a time (plus what the shard reader buffers for one
shard), never a split: only the features [N, D] grow with the data. Shards are extracted
in fixed per-shard batches (`pipeline.data.reader`), so the features of a list of shards
are the concatenation of each shard's own, whoever extracts them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from pipeline.data.codec import Decoding
from pipeline.data.reader import Shard, SplitTensors, shards_batches, split_shards
from pipeline.errors import UserError
from pipeline.io import load_torch_file
from pipeline.nets.backbones import Encoder


def evaluation_device() -> torch.device:
    """Where evaluation computes: the GPU when there is one (extracting ImageNet's features
    on CPU is not an option), the CPU otherwise."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


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


def save_features(path, features: torch.Tensor, labels: torch.Tensor) -> None:
    """Cache one split's features and labels (plain tensors: loadable with weights_only)."""
    torch.save({"features": features.contiguous(), "labels": labels.contiguous()}, path)


def load_features(path) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels cached by `save_features`; a missing or foreign file is named."""
    path = Path(path)
    cached = load_torch_file(path, "cached features missing; run the features stage first")
    features = cached.get("features") if isinstance(cached, dict) else None
    labels = cached.get("labels") if isinstance(cached, dict) else None
    if not (isinstance(features, torch.Tensor) and isinstance(labels, torch.Tensor)):
        raise UserError(f"{path}: not a features file (no 'features' and 'labels' tensors)")
    if features.ndim != 2 or len(features) != len(labels):
        raise UserError(f"{path}: features {tuple(features.shape)} do not match "
                        f"{len(labels)} labels")
    return features, labels

"""Fine-tuning the whole encoder with a fresh linear head on a transfer target.

The frozen probes measure what pretraining put into the features; fine-tuning measures
how good a starting point the encoder is when every weight may move (the second half of
the usual SSL transfer protocol). Reuses the pipeline's optimiser, schedule, crop and
feature extraction, so it trains exactly as pretraining does, only on labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.classify import topk_accuracy
from pipeline.data.loader import StreamLoader, StreamSpec
from pipeline.data.reader import read_split, split_batches, split_bytes, split_shards
from pipeline.data.shards import SplitTensors, read_manifest
from pipeline.data.views import random_resized_crop
from pipeline.errors import UserError
from pipeline.nets.backbones import Encoder
from pipeline.nets.extract import batches_features
from pipeline.optim import build_optimizer, learning_rates
from pipeline.params.evaluation import FinetuneConfig
from pipeline.params.training import OptimizerConfig

CROP_RATIO = (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop default


def augment(images: torch.Tensor, cfg: FinetuneConfig, generator: torch.Generator
            ) -> torch.Tensor:
    """The light fine-tuning augmentation of float images in [0, 1]: a random resized crop
    of `cfg.crop_scale` of the area (none when null) and a flip with probability `cfg.flip`.
    """
    if cfg.crop_scale is None and cfg.flip == 0:
        return images
    # without a crop, scale and ratio 1 make the affine grid the identity (or a mirror)
    scale, ratio = (cfg.crop_scale, CROP_RATIO) if cfg.crop_scale else ((1.0, 1.0), (1.0, 1.0))
    return random_resized_crop(images, scale, ratio, 0.0, cfg.flip, generator)


def optimizer_config(cfg: FinetuneConfig) -> OptimizerConfig:
    """AdamW, cosine from `lr` to 0 per step, no warmup, no decay on biases and norms."""
    return OptimizerConfig(name="adamw", lr=cfg.lr, lr_scaling="none",
                           weight_decay=cfg.weight_decay, exclude_bias_and_norm=True,
                           warmup_epochs=0, schedule="cosine", min_lr_ratio=0.0)


class TrainBatches(Protocol):
    """Fine-tuning's training images: `steps_per_epoch` batches of one size each epoch."""

    images: int
    steps_per_epoch: int
    batch_size: int

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The next epoch's (uint8 images [B, C, H, W], labels [B])."""
        ...


class MemoryTrainBatches:
    """The split in memory, reshuffled each epoch by a generator seeded once; the ragged
    last batch is dropped, so BatchNorm never sees a batch of one."""

    def __init__(self, split: SplitTensors, batch_size: int, seed: int):
        self.split, self.images = split, len(split.labels)
        self.batch_size = min(batch_size, len(split.labels))
        self.steps_per_epoch = len(split.labels) // self.batch_size if self.batch_size else 0
        self.order = torch.Generator().manual_seed(seed)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.split.labels), generator=self.order)
        steps, size = self.steps_per_epoch, self.batch_size
        for batch in order[: steps * size].view(steps, size):
            yield self.split.images[batch], self.split.labels[batch]


class StreamedTrainBatches:
    """The split streamed (one loader process, a seeded shuffle buffer): memory bounded by
    the buffer, whatever the split's size."""

    def __init__(self, shard_dir: str | Path, split: str, batch_size: int, seed: int,
                 shuffle_buffer: int):
        shards, total, decoding = split_shards(shard_dir, [split])
        self.images = total
        self.batch_size = min(batch_size, total)
        self.steps_per_epoch = total // self.batch_size if self.batch_size else 0
        spec = StreamSpec(tuple(shards), decoding, max(self.batch_size, 1), seed=seed,
                          shuffle_buffer=shuffle_buffer)
        self.loader = StreamLoader(spec, num_workers=0)
        self.epochs = 0

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.epochs += 1
        return self.loader.epoch(self.epochs, self.steps_per_epoch)


def train_batches(shard_dir: str | Path, split: str, batch_size: int, seed: int,
                  budget_bytes: int, shuffle_buffer: int) -> TrainBatches:
    """In memory while the split fits `budget_bytes` decoded, streamed above it."""
    if split_bytes(shard_dir, [split]) <= budget_bytes:
        return MemoryTrainBatches(read_split(shard_dir, split), batch_size, seed)
    return StreamedTrainBatches(shard_dir, split, batch_size, seed, shuffle_buffer)


def split_classes(shard_dir: str | Path, splits: list[str]) -> torch.Tensor:
    """Sorted class ids present in the splits (from the manifest: no image is read)."""
    manifest = read_manifest(shard_dir)
    return torch.tensor(sorted({int(c) for split in splits
                                for c in manifest["splits"][split]["classes"]}))


def finetune(encoder: Encoder, train: TrainBatches, test: Iterable[SplitTensors],
             classes: torch.Tensor, cfg: FinetuneConfig, device: str | torch.device = "cpu",
             log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Train `encoder` and a new linear head over `classes` (sorted ids, mapped onto
    0..C-1) with cross-entropy on `train`, then return top-1/top-5 on the `test` batches
    (keys `finetune_*`).

    The encoder is trained in place (pass a freshly loaded one; nothing is saved). The
    head's initialisation, the order and the crops follow `cfg.seed`.
    """
    device = torch.device(device)
    if train.images < 2:
        raise UserError(f"fine-tuning needs at least 2 training images, got {train.images}")
    torch.manual_seed(cfg.seed)
    head = nn.Linear(encoder.feature_dim, len(classes))
    model = nn.Sequential(encoder, head).to(device)
    optimizer_cfg = optimizer_config(cfg)
    optimizer = build_optimizer(model, optimizer_cfg)
    rates = learning_rates(optimizer_cfg, train.steps_per_epoch, cfg.epochs)
    crop_generator = torch.Generator(device=device).manual_seed(cfg.seed)

    model.train()
    step, epoch_loss = 0, float("nan")
    for epoch in range(1, cfg.epochs + 1):
        total = torch.zeros((), device=device)
        for images, labels in train.epoch():
            views = augment(images.to(device).float().div_(255), cfg, crop_generator)
            targets = torch.searchsorted(classes, labels).to(device)
            loss = F.cross_entropy(model(views), targets)
            for group in optimizer.param_groups:
                group["lr"] = rates[step]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += loss.detach()
        epoch_loss = total.item() / train.steps_per_epoch
        if log:
            log(f"finetune epoch {epoch}/{cfg.epochs} loss {epoch_loss:.4f}")

    features, test_labels = batches_features(encoder, test, device)  # eval mode
    with torch.no_grad():
        scores = head(features.to(device)).float().cpu()
    test_y = torch.searchsorted(classes, test_labels)
    return {"finetune_top1": topk_accuracy(scores, test_y, 1),
            "finetune_top5": topk_accuracy(scores, test_y, 5),
            "finetune_train_loss": epoch_loss, "finetune_epochs": cfg.epochs,
            "finetune_lr": cfg.lr, "finetune_batch_size": train.batch_size}


def finetune_split(encoder: Encoder, shard_dir: str | Path, train_split: str,
                   test_split: str, cfg: FinetuneConfig, budget_bytes: int,
                   shuffle_buffer: int, device: str | torch.device = "cpu",
                   log: Callable[[str], None] | None = None) -> dict[str, float]:
    """`finetune` on two splits of a sharded dataset: the training split in memory while
    it fits `budget_bytes`, streamed above; the test split always streamed."""
    train = train_batches(shard_dir, train_split, cfg.batch_size, cfg.seed, budget_bytes,
                          shuffle_buffer)
    classes = split_classes(shard_dir, [train_split, test_split])
    test = split_batches(shard_dir, test_split, cfg.batch_size)
    return finetune(encoder, train, test, classes, cfg, device, log)

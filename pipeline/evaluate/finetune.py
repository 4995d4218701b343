"""Fine-tuning the whole encoder with a fresh linear head on a transfer target.

The frozen probes measure what pretraining put into the features; fine-tuning measures
how good a starting point the encoder is when every weight may move (the second half of
the usual SSL transfer protocol). Reuses the pipeline's optimiser, schedule, crop and
feature extraction, so it trains exactly as pretraining does, only on labels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.classify import contiguous_labels, topk_accuracy
from pipeline.data.shards import SplitTensors
from pipeline.data.views import random_resized_crop
from pipeline.errors import UserError
from pipeline.nets.backbones import Encoder
from pipeline.nets.extract import extract_features
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


def finetune(encoder: Encoder, train: SplitTensors, test: SplitTensors, cfg: FinetuneConfig,
             device: str | torch.device = "cpu",
             log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Train `encoder` and a new linear head with cross-entropy on `train`, then return
    top-1/top-5 on `test` (keys `finetune_*`).

    The encoder is trained in place (pass a freshly loaded one; nothing is saved). Each
    epoch reshuffles the images and drops the ragged last batch, so BatchNorm never sees
    a batch of one. The head's initialisation, the order and the crops follow `cfg.seed`.
    """
    device = torch.device(device)
    train_y, test_y, num_classes = contiguous_labels(train.labels, test.labels)
    if len(train_y) < 2:
        raise UserError(f"fine-tuning needs at least 2 training images, got {len(train_y)}")
    torch.manual_seed(cfg.seed)
    head = nn.Linear(encoder.feature_dim, num_classes)
    model = nn.Sequential(encoder, head).to(device)
    optimizer_cfg = optimizer_config(cfg)
    optimizer = build_optimizer(model, optimizer_cfg)
    batch_size = min(cfg.batch_size, len(train_y))
    steps_per_epoch = len(train_y) // batch_size
    rates = learning_rates(optimizer_cfg, steps_per_epoch, cfg.epochs)
    order_generator = torch.Generator().manual_seed(cfg.seed)
    crop_generator = torch.Generator(device=device).manual_seed(cfg.seed)

    model.train()
    step, epoch_loss = 0, float("nan")
    for epoch in range(1, cfg.epochs + 1):
        order = torch.randperm(len(train_y), generator=order_generator)
        total = torch.zeros((), device=device)
        for batch in order[: steps_per_epoch * batch_size].view(steps_per_epoch, batch_size):
            images = augment(train.images[batch].to(device).float().div_(255), cfg,
                             crop_generator)
            loss = F.cross_entropy(model(images), train_y[batch].to(device))
            for group in optimizer.param_groups:
                group["lr"] = rates[step]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += loss.detach()
        epoch_loss = total.item() / steps_per_epoch
        if log:
            log(f"finetune epoch {epoch}/{cfg.epochs} loss {epoch_loss:.4f}")

    features = extract_features(encoder, test.images, cfg.batch_size, device)  # eval mode
    with torch.no_grad():
        scores = head(features.to(device)).float().cpu()
    return {"finetune_top1": topk_accuracy(scores, test_y, 1),
            "finetune_top5": topk_accuracy(scores, test_y, 5),
            "finetune_train_loss": epoch_loss, "finetune_epochs": cfg.epochs,
            "finetune_lr": cfg.lr, "finetune_batch_size": batch_size}

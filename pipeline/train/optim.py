"""Optimisers and per-step learning-rate schedules (precomputed, as in DINO)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.params import OptimizerConfig


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def learning_rates(cfg: OptimizerConfig, steps_per_epoch: int, epochs: int) -> list[float]:
    """The learning rate of every step: linear warmup, then cosine decay or constant."""
    total = steps_per_epoch * epochs
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total)
    rates = []
    for step in range(total):
        if step < warmup:
            rates.append(cfg.lr * (step + 1) / warmup)
        elif cfg.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            rates.append(cfg.lr * 0.5 * (1 + math.cos(math.pi * progress)))
        else:
            rates.append(cfg.lr)
    return rates

"""Optimisers (SGD, Adam, AdamW, LARS) and per-step learning rates (precomputed, as in DINO)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.params.training import OptimizerConfig

REFERENCE_BATCH = 256


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al. 2017), as in SimCLR/BYOL.

    Parameter groups with `lars_exclude=True` (biases and norm layers) get neither weight
    decay nor the trust ratio.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001):
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "trust_coefficient": trust_coefficient, "lars_exclude": False}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if not group["lars_exclude"]:
                    update = update.add(param, alpha=group["weight_decay"])
                    param_norm, update_norm = param.norm(), update.norm()
                    trust = torch.where(
                        (param_norm > 0) & (update_norm > 0),
                        group["trust_coefficient"] * param_norm / update_norm,
                        torch.ones_like(param_norm))
                    update = update.mul(trust)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(update).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                param.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def parameter_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict]:
    """Split biases and normalisation weights (1-d tensors) from the rest when asked."""
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not cfg.exclude_bias_and_norm:
        return [{"params": [p for _, p in params]}]
    decay = [p for _, p in params if p.ndim > 1]
    no_decay = [p for _, p in params if p.ndim <= 1]
    return [{"params": decay},
            {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]


def scaled_lr(cfg: OptimizerConfig, batch_size: int) -> float:
    """`lr` scaled from the reference batch of 256 to the global batch."""
    ratio = batch_size / REFERENCE_BATCH
    return cfg.lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[cfg.lr_scaling]


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg)
    if cfg.name == "lars":
        return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    trust_coefficient=cfg.trust_coefficient)
    for group in groups:
        group.pop("lars_exclude", None)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def learning_rates(cfg: OptimizerConfig, steps_per_epoch: int, epochs: int,
                   batch_size: int = REFERENCE_BATCH) -> list[float]:
    """The learning rate of every step: linear warmup, then cosine decay or constant."""
    peak = scaled_lr(cfg, batch_size)
    floor = peak * cfg.min_lr_ratio
    total = steps_per_epoch * epochs
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total)
    rates = []
    for step in range(total):
        if step < warmup:
            rates.append(peak * (step + 1) / warmup)
        elif cfg.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            rates.append(floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
        else:
            rates.append(peak)
    return rates

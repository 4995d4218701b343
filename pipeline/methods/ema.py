"""EMA targets (BYOL, truncated triplet, MoCo's key encoder, DSA's `ema` prior) and their
momentum schedules."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """m_k = 1 - (1 - m_0) (cos(pi k / K) + 1) / 2: m_0 at k = 0, rising to 1 at k = K."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def momentum_at(schedule: str, step: int, total_steps: int, base: float) -> float:
    """`constant` (MoCo's default) keeps m_0; `cosine` is BYOL's schedule."""
    return base if schedule == "constant" else cosine_momentum(step, total_steps, base)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A gradient-free copy to serve as an EMA target (optimisers and DDP skip it)."""
    target = copy.deepcopy(module)
    for parameter in target.parameters():
        parameter.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- m target + (1 - m) online; buffers (BN statistics) are copied."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o.detach(), 1.0 - momentum)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        t.copy_(o)

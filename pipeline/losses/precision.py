"""Losses whose arithmetic bf16 would round away run in fp32, also under autocast."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TypeVar

import torch


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32; fp32 and fp64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def without_autocast(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on `x`'s device, for a loss computed in at least fp32."""
    return torch.autocast(x.device.type, enabled=False)


Loss = TypeVar("Loss", bound=Callable[..., object])


def fp32_loss(forward: Loss) -> Loss:
    """Decorate a loss's `forward(self, *tensors)`: autocast off, every tensor at least
    fp32, so a loss reads the same under bf16 autocast as in fp32 training."""
    @functools.wraps(forward)
    def in_fp32(self, *tensors: torch.Tensor):
        with without_autocast(tensors[0]):
            return forward(self, *(at_least_fp32(x) for x in tensors))

    return in_fp32  # type: ignore[return-value]

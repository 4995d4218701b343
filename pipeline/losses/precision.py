"""Losses whose arithmetic bf16 would round away run in fp32, also under autocast."""

from __future__ import annotations

import contextlib

import torch


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32; fp32 and fp64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def without_autocast(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on `x`'s device, for a loss computed in at least fp32."""
    return torch.autocast(x.device.type, enabled=False)

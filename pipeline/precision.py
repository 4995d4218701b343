"""One precision policy for every network that computes in bf16 or fp32: the training
step (`train.precision`) and a DSA prior's gradient-free pass (`regulator.prior_precision`).

`auto` is bf16 where the device multiplies bf16 natively (a CUDA GPU from Ampere on) and
fp32 elsewhere: a GPU that only emulates bf16 would run slower, not faster, and CPUs
rarely gain. An explicit `bf16` is honoured on CPU (autocast works there) and is an error
on a GPU without native bf16.
"""

from __future__ import annotations

import contextlib

import torch

from pipeline.params.base import ParamsError


class UnsupportedPrecision(ParamsError):
    """`bf16` asked for on a GPU without native bf16 (found only where the GPU is: on the
    worker); names the key."""


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 natively: a CUDA GPU from Ampere on."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def bf16_enabled(precision: str, device: torch.device) -> bool:
    """Whether a network set to `precision` (auto, fp32, bf16) computes in bf16 here."""
    if precision == "auto":
        return native_bf16(device)
    return precision == "bf16"


def check_precision(precision: str, device: torch.device, key: str) -> None:
    """Stop, naming `key`, when `bf16` is asked for on a GPU that only emulates it."""
    if precision == "bf16" and device.type == "cuda" and not native_bf16(device):
        raise UnsupportedPrecision([(key, f"bf16, but {torch.cuda.get_device_name(device)} "
                                          "has no native bf16; use auto or fp32")])


def autocast(bf16: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast when `bf16` (see `bf16_enabled`), nothing otherwise."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

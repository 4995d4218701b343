"""Pretraining methods, one small file each, built from params by `build_method`."""

from __future__ import annotations

from pipeline.methods.base import Method
from pipeline.methods.simclr import SimCLR
from pipeline.methods.supervised import Supervised
from pipeline.nets.backbones import Encoder
from pipeline.params import Method as MethodConfig

# params' `method.name` -> class; `random` is absent on purpose: it trains nothing.
METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "supervised": Supervised,
}


def build_method(cfg: MethodConfig, encoder: Encoder, num_classes: int) -> Method:
    if cfg.name not in METHODS:
        raise ValueError(f"method '{cfg.name}' has nothing to train")
    return METHODS[cfg.name].from_config(cfg, encoder, num_classes)


__all__ = ["METHODS", "Method", "build_method"]

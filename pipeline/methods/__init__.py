"""Pretraining methods, one small file each, built from params by `build_method`."""

from __future__ import annotations

from pipeline.methods.barlow_twins import BarlowTwins
from pipeline.methods.base import Method, Regulator, Step
from pipeline.methods.byol import BYOL
from pipeline.methods.dsa import DSA
from pipeline.methods.moco import MoCo
from pipeline.methods.simclr import SimCLR
from pipeline.methods.supervised import Supervised
from pipeline.methods.triplet import TruncatedTriplet
from pipeline.methods.vicreg import VICReg
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import Method as MethodConfig
from pipeline.params.methods import Regulator as RegulatorConfig

# params' `method.name` -> class; `random` is absent on purpose: it trains nothing.
METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "byol": BYOL,
    "triplet": TruncatedTriplet,
    "barlow_twins": BarlowTwins,
    "vicreg": VICReg,
    "moco": MoCo,
    "supervised": Supervised,
}

# params' `regulator.name` -> class; a regulator composes with any embedding method.
REGULATORS: dict[str, type[Regulator]] = {"dsa": DSA}


def build_method(cfg: MethodConfig, encoder: Encoder, num_classes: int,
                 regulator: RegulatorConfig | None = None) -> Method:
    """The run's method, with its regulator attached when the run has one."""
    if cfg.name not in METHODS:
        raise ValueError(f"method '{cfg.name}' has nothing to train")
    method = METHODS[cfg.name].from_config(cfg, encoder, num_classes)
    if regulator is not None:
        method.regulator = REGULATORS[regulator.name](regulator, method)
    return method


__all__ = ["METHODS", "REGULATORS", "Method", "Regulator", "Step", "build_method"]

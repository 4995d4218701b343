"""Truncated triplet (Wang et al., ICCV 2021): BYOL's architecture, one negative deputy."""

from __future__ import annotations

from pipeline.losses.triplet import TruncatedTripletLoss
from pipeline.methods.byol import BYOL
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import TripletMethod


class TruncatedTriplet(BYOL):
    def __init__(self, encoder: Encoder, cfg: TripletMethod):
        super().__init__(encoder, cfg)
        self.criterion = TruncatedTripletLoss(
            None if cfg.skip == "auto" else cfg.skip, cfg.k, cfg.gamma, cfg.margin,
            cfg.expected_classes, cfg.gather_distributed)

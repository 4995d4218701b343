"""Barlow Twins: the cross-correlation of the two views' embeddings driven to identity."""

from __future__ import annotations

from pipeline.losses.barlow_twins import BarlowTwinsLoss
from pipeline.methods.base import ProjectedPairMethod
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import BarlowTwinsMethod


class BarlowTwins(ProjectedPairMethod):
    def __init__(self, encoder: Encoder, cfg: BarlowTwinsMethod):
        super().__init__(encoder, cfg.projector)
        self.criterion = BarlowTwinsLoss(cfg.lambda_offdiagonal,
                                         gather_distributed=cfg.gather_distributed)

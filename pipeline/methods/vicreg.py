"""VICReg: invariance between the views, variance and decorrelation within each view."""

from __future__ import annotations

from pipeline.losses.vicreg import VICRegLoss
from pipeline.methods.base import ProjectedPairMethod
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import VICRegMethod


class VICReg(ProjectedPairMethod):
    def __init__(self, encoder: Encoder, cfg: VICRegMethod):
        super().__init__(encoder, cfg.projector)
        self.criterion = VICRegLoss(cfg.invariance_weight, cfg.variance_weight,
                                    cfg.covariance_weight,
                                    gather_distributed=cfg.gather_distributed)

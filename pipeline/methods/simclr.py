"""SimCLR: the NT-Xent contrastive loss over a projected pair of views."""

from __future__ import annotations

from pipeline.losses.ntxent import NTXentLoss
from pipeline.methods.base import ProjectedPairMethod
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import SimCLRMethod


class SimCLR(ProjectedPairMethod):
    def __init__(self, encoder: Encoder, cfg: SimCLRMethod):
        super().__init__(encoder, cfg.projector)
        self.criterion = NTXentLoss(cfg.temperature, cfg.gather_distributed)

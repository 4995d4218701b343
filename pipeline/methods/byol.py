"""BYOL: an online net with a predictor regresses the projections of an EMA target."""

from __future__ import annotations

from pipeline.losses.byol import BYOLLoss
from pipeline.methods.base import Step
from pipeline.methods.momentum import MomentumMethod
from pipeline.nets.backbones import Encoder
from pipeline.nets.heads import ProjectionHead
from pipeline.params.methods import BYOLMethod, TripletMethod


class BYOL(MomentumMethod):
    """Online encoder -> projector -> predictor; target encoder -> projector (EMA, cosine
    momentum). Also the architecture of the truncated triplet, which swaps `criterion`.
    """

    def __init__(self, encoder: Encoder, cfg: BYOLMethod | TripletMethod):
        super().__init__(encoder, cfg.projector, cfg.base_momentum, "cosine")
        p, q = cfg.projector, cfg.predictor
        self.predictor = ProjectionHead(p.output_dim, q.hidden_dim, p.output_dim,
                                        q.num_layers, q.batch_norm)
        self.criterion = BYOLLoss()

    def step(self, view1, view2, labels) -> Step:
        z = self.project(view1, view2)
        p1, p2 = self.predictor(z).chunk(2)
        f1, f2, t1, t2 = self.targets(view1, view2)
        z1, z2 = z.chunk(2)
        return Step({"loss": self.criterion(p1, p2, t1, t2)}, z1, z2, f1, f2)


"""BYOL: an online net with a predictor regresses the projections of an EMA target."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.methods.base import Method, Step, encode_batches
from pipeline.methods.ema import cosine_momentum, ema_update, frozen_copy
from pipeline.nets.backbones import Encoder
from pipeline.nets.heads import ProjectionHead
from pipeline.params.methods import BYOLMethod, TripletMethod


def byol_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p_i, t_i), averaged over the batch (per sample: nothing to gather)."""
    return (2 - 2 * F.cosine_similarity(p, t.detach(), dim=1)).mean()


class BYOL(Method):
    """Online encoder -> projector -> predictor; target encoder -> projector (EMA).

    Also the architecture of the truncated triplet method, which only swaps `criterion`.
    """

    def __init__(self, encoder: Encoder, cfg: BYOLMethod | TripletMethod):
        super().__init__(encoder)
        p, q = cfg.projector, cfg.predictor
        self.projector = ProjectionHead(encoder.feature_dim, p.hidden_dim, p.output_dim,
                                        p.num_layers, p.batch_norm)
        self.predictor = ProjectionHead(p.output_dim, q.hidden_dim, p.output_dim,
                                        q.num_layers, q.batch_norm)
        self.target = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)
        self.base_momentum = cfg.base_momentum
        self.embedding_dim = p.output_dim

    @property
    def target_encoder(self) -> Encoder:
        return self.target

    def online(self, view1: torch.Tensor, view2: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projections z and predictions p of both views, in one pass each."""
        z = self.projector(torch.cat(self.encode_views(view1, view2)))
        p = self.predictor(z)
        return (*z.chunk(2), *p.chunk(2))

    @torch.no_grad()
    def targets(self, view1: torch.Tensor, view2: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target encoder features and target projections of both views."""
        f1, f2 = encode_batches(self.target, view1, view2)
        t = self.target_projector(torch.cat([f1, f2]))
        return (f1, f2, *t.chunk(2))

    def criterion(self, p1: torch.Tensor, p2: torch.Tensor, t1: torch.Tensor,
                  t2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Symmetrised: view 1 predicts view 2's target and vice versa."""
        return {"loss": byol_loss(p1, t2) + byol_loss(p2, t1)}

    def step(self, view1, view2, labels) -> Step:
        z1, z2, p1, p2 = self.online(view1, view2)
        f1, f2, t1, t2 = self.targets(view1, view2)
        return Step(self.criterion(p1, p2, t1, t2), z1, z2, f1, f2)

    @torch.no_grad()
    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        momentum = cosine_momentum(step, total_steps, self.base_momentum)
        ema_update(self.target, self.encoder, momentum)
        ema_update(self.target_projector, self.projector, momentum)
        super().after_optimizer_step(step, total_steps)

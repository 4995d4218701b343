"""The shared base of methods with an EMA target network: BYOL, truncated triplet, MoCo."""

from __future__ import annotations

from typing import Any

import torch

from pipeline.methods.base import Method, encode_batches
from pipeline.methods.ema import ema_update, frozen_copy, momentum_at
from pipeline.nets.backbones import Encoder
from pipeline.nets.heads import ProjectionHead


class MomentumMethod(Method):
    """Online encoder -> projector; a target encoder -> projector that follows them by EMA
    after every optimizer step (`schedule`: `cosine` from `base_momentum` to 1, BYOL's, or
    `constant`). The target encoder is what DSA's `prior: ema` reuses."""

    def __init__(self, encoder: Encoder, projector: Any, base_momentum: float,
                 schedule: str = "cosine"):
        super().__init__(encoder)
        self.projector = ProjectionHead(encoder.feature_dim, projector.hidden_dim,
                                        projector.output_dim, projector.num_layers,
                                        projector.batch_norm)
        self.target = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)
        self.base_momentum, self.schedule = base_momentum, schedule
        self.embedding_dim = projector.output_dim

    @property
    def target_encoder(self) -> Encoder:
        return self.target

    def project(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """Online projections of both views, concatenated [2n, D] (one pass each)."""
        return self.projector(torch.cat(self.encode_views(view1, view2)))

    @torch.no_grad()
    def targets(self, view1: torch.Tensor, view2: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target encoder features and target projections of both views."""
        f1, f2 = encode_batches(self.target, view1, view2)
        t = self.target_projector(torch.cat([f1, f2]))
        return (f1, f2, *t.chunk(2))

    @torch.no_grad()
    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        momentum = momentum_at(self.schedule, step, total_steps, self.base_momentum)
        ema_update(self.target, self.encoder, momentum)
        ema_update(self.target_projector, self.projector, momentum)
        super().after_optimizer_step(step, total_steps)

"""The shared base of every method: an encoder plus what the method trains on top of it.

A method's `forward` is its training step, so that DDP's wrapper sees every forward pass
and synchronises gradients. It returns a dict with the scalar `loss` to minimise and any
other scalars worth logging.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from pipeline.nets.backbones import Encoder


class Method(nn.Module):
    uses_labels: ClassVar[bool] = False

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    @classmethod
    def from_config(cls, cfg, encoder: Encoder, num_classes: int) -> Method:
        """Build from the run's `method` params; override when more is needed."""
        return cls(encoder, cfg)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode_views(self, view1: torch.Tensor, view2: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of both views in one backbone pass (one BN batch, one kernel launch)."""
        if view1.shape != view2.shape:  # multi-resolution views cannot share a batch
            return self.encoder(view1), self.encoder(view2)
        features = self.encoder(torch.cat([view1, view2]))
        return features.chunk(2)

    @torch.no_grad()
    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Hook for updates outside the gradient (EMA targets); `step` counts from 1."""

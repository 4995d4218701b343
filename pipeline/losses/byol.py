"""BYOL's regression loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BYOLLoss(nn.Module):
    """2 - 2 cos(p1_i, sg(t2_i)) + 2 - 2 cos(p2_i, sg(t1_i)), averaged over the batch.

    `p` are the online predictions of the two views, `t` the target projections; each
    view predicts the other's target. Per sample, so nothing is gathered across workers.
    """

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor
                ) -> torch.Tensor:
        return regression(p1, t2) + regression(p2, t1)


def regression(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p_i, t_i), averaged; the target is a stop-gradient."""
    return (2 - 2 * F.cosine_similarity(p, t.detach(), dim=1)).mean()

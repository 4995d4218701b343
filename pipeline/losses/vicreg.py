"""VICReg's variance-invariance-covariance loss (Bardes et al., 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distributed import all_reduce_sum, global_batch
from pipeline.losses.precision import fp32_loss


class VICRegLoss(nn.Module):
    """invariance_weight * MSE(h1, h2) + variance_weight * variance
    + covariance_weight * covariance, as the official code computes them:

    - invariance: mean over rows and dimensions of (h1 - h2)^2;
    - variance: mean over dimensions of relu(1 - sqrt(Var(h_d) + eps)), Var unbiased,
      averaged over the two views;
    - covariance: sum of the squared off-diagonal entries of each view's covariance
      matrix (unbiased) / D, summed over the two views.

    Means and (co)variances are over the global batch: each worker's sums are all-reduced,
    so W workers train like one with the whole batch. In fp32 even under bf16 autocast.
    """

    def __init__(self, invariance_weight: float = 25.0, variance_weight: float = 25.0,
                 covariance_weight: float = 1.0, eps: float = 1e-4,
                 gather_distributed: bool = True):
        super().__init__()
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.eps = eps
        self.gather_distributed = gather_distributed

    @fp32_loss
    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        gathered, rows = global_batch(h1, self.gather_distributed)
        total = all_reduce_sum if gathered else (lambda x: x)
        dim = h1.shape[1]
        invariance = total(F.mse_loss(h1, h2, reduction="sum")) / (rows * dim)
        variance, covariance = 0.0, 0.0
        for h in (h1, h2):
            centred = h - total(h.sum(dim=0)) / rows
            gram = total(centred.T @ centred) / (rows - 1)  # the covariance matrix
            std = (torch.diagonal(gram) + self.eps).sqrt()
            variance = variance + F.relu(1 - std).mean() / 2
            off_diagonal = gram.pow(2).sum() - torch.diagonal(gram).pow(2).sum()
            covariance = covariance + off_diagonal / dim
        return (self.invariance_weight * invariance + self.variance_weight * variance
                + self.covariance_weight * covariance)

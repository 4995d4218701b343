"""Barlow Twins' redundancy-reduction loss (Zbontar et al., 2021)."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.distributed import all_reduce_sum, global_batch
from pipeline.losses.precision import fp32_loss


def batch_sum(x: torch.Tensor, gathered: bool) -> torch.Tensor:
    """Sum over the rows of the global batch (differentiable all-reduce) or the local one."""
    total = x.sum(dim=0)
    return all_reduce_sum(total) if gathered else total


def standardise(h: torch.Tensor, rows: int, gathered: bool, eps: float) -> torch.Tensor:
    """(h - mean) / sqrt(var + eps) per dimension over the global batch of `rows` rows:
    BatchNorm without affine in training mode (biased variance), with all-reduced
    statistics (SyncBatchNorm exists on CUDA only)."""
    mean = batch_sum(h, gathered) / rows
    centred = h - mean
    variance = batch_sum(centred.pow(2), gathered) / rows
    return centred / (variance + eps).sqrt()


class BarlowTwinsLoss(nn.Module):
    """sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2, C the cross-correlation of the two
    views' standardised embeddings over the global batch: C = h1n^T h2n / N.

    Each worker's share of C is all-reduced, so every worker computes the global loss and
    W workers train like one with the whole batch. In fp32 even under bf16 autocast.
    """

    def __init__(self, lambda_offdiagonal: float = 5e-3, eps: float = 1e-5,
                 gather_distributed: bool = True):
        super().__init__()
        self.lambda_offdiagonal = lambda_offdiagonal
        self.eps = eps
        self.gather_distributed = gather_distributed

    @fp32_loss
    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        gathered, rows = global_batch(h1, self.gather_distributed)
        h1n = standardise(h1, rows, gathered, self.eps)
        h2n = standardise(h2, rows, gathered, self.eps)
        local = h1n.T @ h2n
        correlation = (all_reduce_sum(local) if gathered else local) / rows
        diagonal = torch.diagonal(correlation)
        off_diagonal = correlation.pow(2).sum() - diagonal.pow(2).sum()
        return (1 - diagonal).pow(2).sum() + self.lambda_offdiagonal * off_diagonal

"""SimCLR's NT-Xent loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distributed import gather, rank_and_world


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross-entropy (SimCLR).

    For anchor z1_i the positive is z2_i and the candidates are every other embedding of
    both views in the (gathered) batch: 2N - 1 logits per anchor. The loss is the mean
    over the anchors of both views.
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = True):
        super().__init__()
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        n = z1.shape[0]
        rank, _ = rank_and_world()
        if self.gather_distributed:
            all1, all2 = gather(z1), gather(z2)
            offset = rank * n
        else:
            all1, all2, offset = z1, z2, 0
        total = all1.shape[0]
        anchors = torch.cat([z1, z2])  # [2n, D]
        candidates = torch.cat([all1, all2])  # [2N, D]
        logits = anchors @ candidates.T / self.temperature
        local = torch.arange(n, device=z1.device) + offset
        self_index = torch.cat([local, local + total])
        positive = torch.cat([local + total, local])
        rows = torch.arange(2 * n, device=z1.device)
        logits[rows, self_index] = float("-inf")
        return F.cross_entropy(logits, positive)

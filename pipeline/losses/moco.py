"""MoCo v2's InfoNCE loss against a queue of past keys (He et al., 2020; Chen et al., 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distributed import gather
from pipeline.losses.precision import fp32_loss


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
             ) -> torch.Tensor:
    """-log exp(q_i.k_i / t) / (exp(q_i.k_i / t) + sum_j exp(q_i.queue_j / t)), averaged
    over the rows; all vectors unit length."""
    positive = (q * k).sum(dim=1, keepdim=True)
    logits = torch.cat([positive, q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


class MoCoLoss(nn.Module):
    """InfoNCE of queries q against the positive key k of the other view and a queue of
    past keys, symmetrised: (InfoNCE(q1, k2, queue 2) + InfoNCE(q2, k1, queue 1)) / 2.

    The queue holds `queue_size` keys per view (as solo-learn's MoCo v2+), initialised as
    random unit vectors; each call enqueues the keys of the global batch, all-gathered, so
    every worker holds the same queue. It is a buffer: checkpoints save it and its pointer,
    and a resumed run continues with the same negatives. `queue_size` must be a multiple
    of the global batch. Keys receive no gradient. In fp32 even under bf16 autocast.
    """

    def __init__(self, dim: int, queue_size: int = 4096, temperature: float = 0.2):
        super().__init__()
        self.temperature = temperature
        self.register_buffer("queue", F.normalize(torch.randn(2, queue_size, dim), dim=2))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))

    @fp32_loss
    def forward(self, q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor
                ) -> torch.Tensor:
        q1, q2, k1, k2 = (F.normalize(x, dim=1) for x in (q1, q2, k1, k2))
        k1, k2 = k1.detach(), k2.detach()
        queue = self.queue.clone()  # the enqueue below must not touch what backward reads
        loss = (info_nce(q1, k2, queue[1], self.temperature)
                + info_nce(q2, k1, queue[0], self.temperature)) / 2
        self.enqueue(k1, k2)
        return loss

    @torch.no_grad()
    def enqueue(self, k1: torch.Tensor, k2: torch.Tensor) -> None:
        """Replace the oldest keys by the global batch's keys (the same on every worker)."""
        keys = torch.stack([gather(k1), gather(k2)])  # [2, N, D]
        size, batch = self.queue.shape[1], keys.shape[1]
        if size % batch:
            raise ValueError(f"queue_size {size} is not a multiple of the global batch {batch}")
        # indices from the pointer tensor: no host sync on a GPU
        slots = self.queue_pointer + torch.arange(batch, device=keys.device)
        self.queue.index_copy_(1, slots, keys.to(self.queue.dtype))
        self.queue_pointer.add_(batch).remainder_(size)

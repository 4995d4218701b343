"""The truncated triplet loss (Wang et al., ICCV 2021): one negative deputy per anchor.

Too few negatives under-cluster, too many over-cluster (the nearest negatives are often the
same class). Each anchor is ranked against a single *deputy*: the mean distance of the
negatives just after the `skip` most similar ones, which are likely false negatives.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distributed import gather, rank_and_world
from pipeline.losses.precision import fp32_loss


@functools.lru_cache(maxsize=64)
def auto_skip(num_negatives: int, num_classes: int, quantile: float = 0.99) -> int:
    """Smallest r with P(Binomial(n, 1/C) <= r) >= quantile: how many of the n negatives
    can share the anchor's class, so the deputy starts after them.

    The probabilities are summed from log space: `comb(n, r) * p**r` overflows a float once
    n reaches about 1030 (a global batch of 8 GPUs x 128). Cached: the batch rarely changes.
    """
    p = 1.0 / num_classes
    if p == 1.0:
        return num_negatives
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(num_negatives + 1)
    cdf = 0.0
    for r in range(num_negatives + 1):
        log_pmf = (log_n - math.lgamma(r + 1) - math.lgamma(num_negatives - r + 1)
                   + r * log_p + (num_negatives - r) * log_q)
        cdf += math.exp(log_pmf)
        if cdf >= quantile:
            return r
    return num_negatives


def truncated_triplet_loss(p: torch.Tensor, t: torch.Tensor, skip: int = 1, k: int = 9,
                           gamma: float = 2.0, margin: float = 100.0,
                           gather_distributed: bool = True) -> torch.Tensor:
    """One direction: mean of max(0, gamma d(p_i, t_i) - deputy_i + margin) over the local
    anchors.

    `p` are normalised online predictions and `t` normalised target projections [N, D] of
    the other view; d_ij = -2 p_i . t_j. Negatives are every t_j, j != i, of the gathered
    batch; the deputy is the mean of their distances ranked skip+1 .. skip+k (ascending).
    """
    n = p.shape[0]
    rank, _ = rank_and_world()
    candidates, offset = (gather(t), rank * n) if gather_distributed else (t, 0)
    if skip + k > candidates.shape[0] - 1:
        raise ValueError(f"skip + k = {skip + k} exceeds the {candidates.shape[0] - 1} "
                         "negatives of the batch")
    distances = -2 * p @ candidates.T  # [n, N]
    rows = torch.arange(n, device=p.device)
    positive = distances[rows, rows + offset]
    columns = torch.arange(candidates.shape[0], device=p.device)
    negatives = distances.masked_fill(columns == (rows + offset)[:, None], math.inf)
    nearest = negatives.topk(skip + k, dim=1, largest=False).values
    deputy = nearest[:, skip:].mean(dim=1)
    return F.relu(gamma * positive - deputy + margin).mean()


class TruncatedTripletLoss(nn.Module):
    """The truncated triplet loss of online predictions p against target projections t,
    symmetrised (p1 against t2, p2 against t1).

    `skip=None` picks it from the batch: the Binomial quantile `auto_skip` for the
    negatives of the (global) batch and `expected_classes`. Runs in fp32 even under bf16
    autocast: with margin 100 the loss sits near 200, where bf16 steps by 1, and bf16
    distances tie in the deputy's `topk`.
    """

    def __init__(self, skip: int | None = 1, k: int = 9, gamma: float = 2.0,
                 margin: float = 100.0, expected_classes: int | None = None,
                 gather_distributed: bool = True):
        super().__init__()
        if skip is None and expected_classes is None:
            raise ValueError("skip=None (auto) needs expected_classes")
        self.skip, self.k = skip, k
        self.gamma, self.margin = gamma, margin
        self.expected_classes = expected_classes
        self.gather_distributed = gather_distributed

    def resolved_skip(self, batch: int) -> int:
        """`skip`, or its automatic value for the (global) batch's number of negatives."""
        if self.skip is not None:
            return self.skip
        _, world = rank_and_world()
        total = batch * world if self.gather_distributed else batch
        return auto_skip(total - 1, self.expected_classes)

    @fp32_loss
    def forward(self, p1: torch.Tensor, p2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor
                ) -> torch.Tensor:
        p1, p2, t1, t2 = (F.normalize(x, dim=1) for x in (p1, p2, t1, t2))
        args = (self.resolved_skip(p1.shape[0]), self.k, self.gamma, self.margin,
                self.gather_distributed)
        return truncated_triplet_loss(p1, t2, *args) + truncated_triplet_loss(p2, t1, *args)

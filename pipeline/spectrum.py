"""Label-free statistics of an embedding matrix that pretraining's monitor and collapse
check and the geometry stage share: RankMe and the spread of the normalised features.

Every function takes the raw embeddings Z [N, D] and computes in float64. Non-finite
embeddings (a diverging run) give NaN, never an error.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RANKME_EPS = 1e-7  # Garrido et al. 2023: keeps log p_k finite for zero singular values


def as_float64(z) -> torch.Tensor:
    return torch.as_tensor(z).detach().to(device="cpu", dtype=torch.float64)


def entropy_rank(values: torch.Tensor) -> float:
    """exp(entropy) of p_k = v_k / sum v + eps: between ~1 (one direction) and len(v)."""
    total = values.sum()
    if total <= 0:
        return 0.0  # an all-zero matrix spans no direction
    p = values / total + RANKME_EPS
    return float(torch.exp(-(p * p.log()).sum()))


def all_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def rankme(z) -> float:
    """RankMe (Garrido et al. 2023): the smooth rank of the un-centred embeddings [N, D].

    Between 1 (every embedding on one line) and min(N, D) (a flat spectrum); 0 for an
    all-zero matrix.
    """
    x = as_float64(z)
    return entropy_rank(torch.linalg.svdvals(x)) if all_finite(x) else math.nan


def std_of_l2_normalized(z) -> float:
    """Mean over dimensions of the per-dimension std of the L2-normalised embeddings:
    about 1/sqrt(D) when they spread over the sphere, 0 when they all point one way."""
    x = F.normalize(as_float64(z), dim=1)
    if not all_finite(x):
        return math.nan
    if len(x) < 2:
        return 0.0
    return float(x.std(dim=0).mean())

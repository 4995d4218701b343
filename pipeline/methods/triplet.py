"""Truncated triplet (Wang et al., ICCV 2021): BYOL's architecture, one negative deputy.

Too few negatives under-cluster, too many over-cluster (the nearest negatives are often the
same class). Each anchor is ranked against a single *deputy*: the mean distance of the
negatives just after the `skip` most similar ones, which are likely false negatives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.distributed import gather, rank_and_world
from pipeline.methods.base import Step
from pipeline.methods.byol import BYOL
from pipeline.nets.backbones import Encoder
from pipeline.params import MultiResolution, TripletMethod


def auto_skip(num_negatives: int, num_classes: int, quantile: float = 0.99) -> int:
    """Smallest r with P(Binomial(n, 1/C) <= r) >= quantile: how many of the n negatives
    can share the anchor's class, so the deputy starts after them."""
    p, cdf = 1.0 / num_classes, 0.0
    for r in range(num_negatives + 1):
        cdf += math.comb(num_negatives, r) * p**r * (1 - p) ** (num_negatives - r)
        if cdf >= quantile:
            return r
    return num_negatives


def truncated_triplet_loss(p: torch.Tensor, t: torch.Tensor, skip: int = 1, k: int = 9,
                           gamma: float = 2.0, margin: float = 100.0,
                           gather_distributed: bool = True) -> torch.Tensor:
    """Mean of max(0, gamma d(p_i, t_i) - deputy_i + margin) over the local anchors.

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
    negatives = distances.index_put((rows, rows + offset), distances.new_tensor(math.inf))
    nearest = negatives.topk(skip + k, dim=1, largest=False).values
    deputy = nearest[:, skip:].mean(dim=1)
    return F.relu(gamma * positive - deputy + margin).mean()


def random_resize(images: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    """Resize a whole batch to one random side in [low, high] x its side (official trick)."""
    side = images.shape[-1]
    low, high = max(1, round(scale[0] * side)), max(1, round(scale[1] * side))
    size = int(torch.randint(low, high + 1, ()).item())
    if size == side:
        return images
    factor = size / side
    return F.interpolate(images, size=(max(1, round(images.shape[-2] * factor)), size),
                         mode="bilinear", align_corners=False, antialias=factor < 1)


class TruncatedTriplet(BYOL):
    def __init__(self, encoder: Encoder, cfg: TripletMethod):
        super().__init__(encoder, cfg)
        self.skip, self.k = cfg.skip, cfg.k
        self.expected_classes = cfg.expected_classes
        self.gamma, self.margin = cfg.gamma, cfg.margin
        self.gather_distributed = cfg.gather_distributed
        self.multi_resolution: MultiResolution | None = cfg.multi_resolution

    def resolved_skip(self, batch: int) -> int:
        """`skip`, with `auto` resolved from the (global) batch's number of negatives."""
        if self.skip != "auto":
            return self.skip
        _, world = rank_and_world()
        total = batch * world if self.gather_distributed else batch
        return auto_skip(total - 1, self.expected_classes)

    def criterion(self, p1, p2, t1, t2):
        p1, p2, t1, t2 = (F.normalize(x, dim=1) for x in (p1, p2, t1, t2))
        skip = self.resolved_skip(p1.shape[0])
        args = (skip, self.k, self.gamma, self.margin, self.gather_distributed)
        return {"loss": truncated_triplet_loss(p1, t2, *args)
                + truncated_triplet_loss(p2, t1, *args)}

    def step(self, view1, view2, labels) -> Step:
        if self.multi_resolution is None:
            return super().step(view1, view2, labels)
        scales = self.multi_resolution
        online1, online2 = (random_resize(v, scales.online) for v in (view1, view2))
        z1, p1 = self._project(self.encoder, self.projector, online1, predict=True)
        z2, p2 = self._project(self.encoder, self.projector, online2, predict=True)
        with torch.no_grad():
            target1, target2 = (random_resize(v, scales.target) for v in (view1, view2))
            f1, t1 = self._project(self.target, self.target_projector, target1)
            f2, t2 = self._project(self.target, self.target_projector, target2)
        return Step(self.criterion(p1, p2, t1, t2), z1, z2, f1, f2)

    def _project(self, encoder, projector, images, predict: bool = False):
        """Views of different sizes cannot share a batch: one pass per view."""
        features = encoder(images)
        z = projector(features)
        return (z, self.predictor(z)) if predict else (features, z)

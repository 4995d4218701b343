"""Geometry of a representation: the crowding problem, measured (methods.md).

All metrics use L2-normalised features, so methods with different feature scales are
comparable, except the label-free spectra (RankMe, alpha-ReQ, feature std; see
`pipeline.evaluate.spectrum`), which take the raw features as their papers define them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.evaluate.spectrum import alpha_req
from pipeline.spectrum import rankme, std_of_l2_normalized


def _as_tensor(features, labels) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    return F.normalize(x, dim=1), y


def alignment(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """E ||z1 - z2||^2 over positive pairs (normalised features of two views)."""
    z1, z2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    return (z1 - z2).pow(2).sum(dim=1).mean().item()


def uniformity(z: torch.Tensor) -> float:
    """log E exp(-2 ||z_i - z_j||^2) over distinct pairs."""
    z = F.normalize(z.double(), dim=1)
    squared = torch.pdist(z).pow(2)
    return torch.logsumexp(-2 * squared, dim=0).item() - float(np.log(len(squared)))


def effective_rank(z: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of the centred features."""
    singular = torch.linalg.svdvals(z - z.mean(dim=0))
    p = singular / singular.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def geometry_metrics(features, labels) -> dict[str, float]:
    """Class separation and crowding of `features` [N, D] with integer `labels` [N].

    - intra_class_variance: mean over classes of the mean squared distance to the class mean
    - inter_class_distance / min_inter_class_distance: mean / min distance between means
    - crowding_index: intra_class_variance / mean squared distance between class means
    - nc1: trace(S_W S_B^+) / C (neural collapse)
    - effective_rank, uniformity, nearest_class_mean_accuracy, silhouette
    - label-free, on the raw features: rankme, alpha_req, feature_std (std_of_l2_normalized)
    """
    raw = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    z, y = _as_tensor(features, labels)
    classes = torch.unique(y)
    means = torch.stack([z[y == c].mean(dim=0) for c in classes])
    intra = torch.stack([(z[y == c] - means[i]).pow(2).sum(dim=1).mean()
                         for i, c in enumerate(classes)]).mean().item()
    pairwise = torch.pdist(means) if len(classes) > 1 else torch.zeros(1, dtype=z.dtype)
    global_mean = z.mean(dim=0)
    centred_means = means - global_mean
    between = centred_means.T @ centred_means / len(classes)
    within = torch.zeros_like(between)
    for i, c in enumerate(classes):
        centred = z[y == c] - means[i]
        within += centred.T @ centred / len(centred)
    within /= len(classes)
    nc1 = torch.trace(within @ torch.linalg.pinv(between, hermitian=True)).item() / len(classes)
    distances = torch.cdist(z, means)
    ncm_accuracy = (classes[distances.argmin(dim=1)] == y).double().mean().item()
    return {
        "intra_class_variance": intra,
        "inter_class_distance": pairwise.mean().item(),
        "min_inter_class_distance": pairwise.min().item(),
        "crowding_index": intra / max(pairwise.pow(2).mean().item(), 1e-12),
        "nc1": nc1,
        "effective_rank": effective_rank(z),
        "uniformity": uniformity(z),
        "nearest_class_mean_accuracy": ncm_accuracy,
        "silhouette": _silhouette(z, y),
        "rankme": rankme(raw),
        "alpha_req": alpha_req(raw),
        "feature_std": std_of_l2_normalized(raw),
    }


def _silhouette(z: torch.Tensor, y: torch.Tensor) -> float:
    from sklearn.metrics import silhouette_score

    if len(torch.unique(y)) < 2:
        return 0.0
    return float(silhouette_score(z.numpy(), y.numpy(), metric="euclidean"))


def cosine_similarity_pairs(features, labels) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of same-class and different-class pairs (i < j)."""
    z, y = _as_tensor(features, labels)
    similarity = z @ z.T
    upper = torch.triu(torch.ones_like(similarity, dtype=torch.bool), diagonal=1)
    same = (y[:, None] == y[None, :]) & upper
    different = (y[:, None] != y[None, :]) & upper
    return similarity[same].numpy(), similarity[different].numpy()

import math

import numpy as np
import torch

from pipeline.evaluate.geometry import alignment, effective_rank, geometry_metrics, uniformity


def clusters(spread: float, classes: int = 4, per_class: int = 50, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:classes] * 5
    x = np.concatenate([c + rng.normal(scale=spread, size=(per_class, dim)) for c in centres])
    return x, np.repeat(np.arange(classes), per_class)


def test_separated_clusters_are_less_crowded_than_mixed_ones():
    tight = geometry_metrics(*clusters(spread=0.1))
    crowded = geometry_metrics(*clusters(spread=5.0))
    assert tight["intra_class_variance"] < crowded["intra_class_variance"]
    assert tight["inter_class_distance"] > crowded["inter_class_distance"]
    assert tight["crowding_index"] < 0.01 < crowded["crowding_index"]
    assert tight["nearest_class_mean_accuracy"] == 1.0
    assert tight["silhouette"] > 0.9 > crowded["silhouette"]
    assert tight["nc1"] < crowded["nc1"]


def test_collapsed_classes_have_known_values():
    # Each class collapses onto one orthonormal axis: no intra-class variance, all class
    # means sqrt(2) apart.
    x = np.repeat(np.eye(3), 10, axis=0)
    y = np.repeat(np.arange(3), 10)
    metrics = geometry_metrics(x, y)
    assert metrics["intra_class_variance"] < 1e-12
    assert math.isclose(metrics["inter_class_distance"], math.sqrt(2), rel_tol=1e-9)
    assert math.isclose(metrics["min_inter_class_distance"], math.sqrt(2), rel_tol=1e-9)


def test_effective_rank_of_a_rank_k_subspace():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(32, 3)))[0]
    coefficients = rng.normal(size=(500, 3))
    z = torch.tensor(coefficients @ basis.T)
    assert 2.5 < effective_rank(z) <= 3.0 + 1e-9
    isotropic = torch.tensor(rng.normal(size=(5000, 4)))
    assert abs(effective_rank(isotropic) - 4.0) < 0.05


def test_alignment_and_uniformity():
    z = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
    assert alignment(z, z) == 0.0
    assert math.isclose(alignment(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])), 2.0)
    collapsed = torch.ones(50, 16)
    assert abs(uniformity(collapsed)) < 1e-9  # log E exp(0) = 0, the worst value
    assert uniformity(z) < -1.0

"""Each geometry metric against values known by construction (methods.md, geometry)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.evaluate.geometry import (
    alignment,
    cosine_similarity_pairs,
    effective_rank,
    geometry_metrics,
    uniformity,
)
from pipeline.evaluate.spectrum import alpha_req
from pipeline.spectrum import rankme, std_of_l2_normalized

REQUIRED = {"intra_class_variance", "inter_class_distance", "min_inter_class_distance",
            "crowding_index", "nc1", "effective_rank", "uniformity",
            "nearest_class_mean_accuracy", "silhouette", "rankme", "alpha_req", "feature_std"}
LABEL_FREE = {"rankme", "alpha_req", "feature_std"}  # on the raw features, as published


def collapsed(classes: int = 3, per_class: int = 4, dim: int = 5
              ) -> tuple[np.ndarray, np.ndarray]:
    """Every sample of class c sits exactly on the basis vector e_c (neural collapse)."""
    labels = np.repeat(np.arange(classes), per_class)
    return np.eye(dim)[labels], labels


def fanned(theta: float, classes: int = 3, per_class: int = 10
           ) -> tuple[np.ndarray, np.ndarray]:
    """Class c: unit vectors cos(theta) e_c +- sin(theta) e_{C+c}, half of each sign.

    Its mean is cos(theta) e_c, every sample is sin(theta) from it, and means are
    sqrt(2) cos(theta) apart.
    """
    dim = 2 * classes
    rows, labels = [], []
    for c in range(classes):
        for i in range(per_class):
            v = np.zeros(dim)
            v[c] = math.cos(theta)
            v[classes + c] = math.sin(theta) * (1 if i % 2 == 0 else -1)
            rows.append(v)
            labels.append(c)
    return np.array(rows), np.array(labels)


def test_collapsed_classes_have_the_ideal_values():
    x, y = collapsed()
    m = geometry_metrics(x, y)
    assert set(m) >= REQUIRED
    assert m["intra_class_variance"] == pytest.approx(0, abs=1e-12)
    assert m["inter_class_distance"] == pytest.approx(math.sqrt(2))
    assert m["min_inter_class_distance"] == pytest.approx(math.sqrt(2))
    assert m["crowding_index"] == pytest.approx(0, abs=1e-12)
    assert m["nc1"] == pytest.approx(0, abs=1e-12)
    assert m["nearest_class_mean_accuracy"] == 1.0
    assert m["silhouette"] == pytest.approx(1.0)
    # centred, the three class points span a plane with equal singular values
    assert m["effective_rank"] == pytest.approx(2.0)
    # pairs: 3 * C(4, 2) = 18 at distance 0, 48 at squared distance 2
    assert m["uniformity"] == pytest.approx(math.log((18 + 48 * math.exp(-4)) / 66))


@pytest.mark.parametrize("theta", [0.2, 0.6, 1.0])
def test_fanned_classes_match_the_closed_forms(theta: float):
    x, y = fanned(theta)
    m = geometry_metrics(x, y)
    assert m["intra_class_variance"] == pytest.approx(math.sin(theta) ** 2)
    assert m["inter_class_distance"] == pytest.approx(math.sqrt(2) * math.cos(theta))
    assert m["min_inter_class_distance"] == pytest.approx(math.sqrt(2) * math.cos(theta))
    assert m["crowding_index"] == pytest.approx(math.tan(theta) ** 2 / 2)
    assert m["nearest_class_mean_accuracy"] == 1.0


def test_nc1_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=200)
    x = rng.normal(size=(4, 6))[y] + 0.7 * rng.normal(size=(200, 6))
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    means = np.stack([z[y == c].mean(0) for c in range(4)])
    centred_means = means - z.mean(0)
    s_b = centred_means.T @ centred_means / 4
    s_w = sum(np.cov(z[y == c].T, bias=True) for c in range(4)) / 4
    expected = np.trace(s_w @ np.linalg.pinv(s_b)) / 4
    assert geometry_metrics(x, y)["nc1"] == pytest.approx(expected, rel=1e-6)


def test_crowded_classes_score_worse_than_separated_ones():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, size=500)
    centres = rng.normal(size=(5, 16))
    noise = rng.normal(size=(500, 16))
    separated = geometry_metrics(centres[y] + 0.1 * noise, y)
    crowded = geometry_metrics(centres[y] + 2.0 * noise, y)
    for key in ("intra_class_variance", "crowding_index", "nc1"):
        assert crowded[key] > separated[key]
    for key in ("min_inter_class_distance", "nearest_class_mean_accuracy", "silhouette"):
        assert crowded[key] < separated[key]
    assert separated["nearest_class_mean_accuracy"] == 1.0


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_effective_rank_of_a_rank_k_subspace(rank: int):
    # +-e_i for i < k, rotated into 32 dimensions: centred, k equal singular values
    rotation, _ = np.linalg.qr(np.random.default_rng(rank).normal(size=(32, 32)))
    points = np.concatenate([np.eye(32)[:rank], -np.eye(32)[:rank]]) @ rotation.T
    assert effective_rank(torch.tensor(points)) == pytest.approx(rank)
    # a generic rank-k cloud has effective rank at most k
    cloud = np.random.default_rng(0).normal(size=(300, rank)) @ rotation[:rank]
    assert 0.5 * rank < effective_rank(torch.tensor(cloud)) <= rank + 1e-9


def test_alignment_of_known_pairs():
    z = torch.eye(4)
    assert alignment(z, z) == pytest.approx(0)
    assert alignment(z, -z) == pytest.approx(4)
    assert alignment(z, z.roll(1, dims=1)) == pytest.approx(2)  # orthogonal partners


def test_uniformity_of_known_configurations():
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8)
    assert uniformity(torch.eye(5)) == pytest.approx(-4)  # all pairs at squared distance 2
    # spreading points out lowers (improves) uniformity
    rng = np.random.default_rng(0)
    spread = torch.tensor(rng.normal(size=(200, 8)))
    bunched = spread + torch.tensor([20.0] + [0.0] * 7)
    assert uniformity(spread) < uniformity(bunched)


def test_metrics_use_normalised_features_only():
    x, y = fanned(0.5)
    scaled = x * np.linspace(1, 10, len(x))[:, None]  # rescaling rows changes nothing
    for key, value in geometry_metrics(x, y).items():
        if key not in LABEL_FREE:
            assert geometry_metrics(scaled, y)[key] == pytest.approx(value, abs=1e-9)


def test_label_free_metrics_are_the_spectra_of_the_raw_features():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, size=300)
    x = rng.normal(size=(3, 16))[y] + rng.normal(size=(300, 16)) * np.linspace(2, 0.1, 16)
    x *= np.linspace(1, 5, 300)[:, None]  # rows of different norms: raw != normalised
    metrics = geometry_metrics(x, y)
    assert metrics["rankme"] == rankme(x) != rankme(x / np.linalg.norm(x, axis=1)[:, None])
    assert metrics["alpha_req"] == alpha_req(x)
    assert metrics["feature_std"] == std_of_l2_normalized(x)
    assert geometry_metrics(7 * x, y)["rankme"] == pytest.approx(metrics["rankme"])


def test_similarity_pairs_split_by_class():
    x, y = collapsed(classes=2, per_class=3, dim=2)
    same, different = cosine_similarity_pairs(x, y)
    assert len(same) == 2 * 3 and len(different) == 9
    assert np.allclose(same, 1) and np.allclose(different, 0)

"""The label-free monitors against references written from the papers' definitions (numpy),
on embedding matrices Z = U diag(s) V^T whose singular values are chosen."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.evaluate.spectrum import alpha_fit_ranks, alpha_req, lidar
from pipeline.spectrum import rankme, std_of_l2_normalized

N, D = 200, 64


def with_singular_values(s: np.ndarray, n: int = N, centred: bool = False,
                         seed: int = 0) -> np.ndarray:
    """Z [n, len(s)] with exactly the singular values `s`; with `centred`, the columns of
    U are orthogonal to the ones vector, so the centred Z is Z itself."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, len(s)))
    if centred:
        a -= a.mean(axis=0)
    u, _ = np.linalg.qr(a)
    v, _ = np.linalg.qr(rng.standard_normal((len(s), len(s))))
    return u @ np.diag(s) @ v.T


def reference_rankme(z: np.ndarray) -> float:
    """Garrido et al. 2023, eq. 1: p_k = sigma_k / ||sigma||_1 + eps, exp(entropy)."""
    sigma = np.linalg.svd(z, compute_uv=False)
    p = sigma / np.abs(sigma).sum() + 1e-7
    return float(np.exp(-np.sum(p * np.log(p))))


def reference_alpha(z: np.ndarray) -> float:
    """Agrawal et al. 2022: lambda_k ~ k^-alpha of the covariance, a straight line in
    log-log (np.polyfit) over the documented ranks."""
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(z, rowvar=False)))[::-1]
    positive = eigenvalues[eigenvalues > eigenvalues[0] * 1e-10]
    first, last = alpha_fit_ranks(len(positive))
    ranks = np.arange(first, last + 1)
    slope, _ = np.polyfit(np.log(ranks), np.log(positive[first - 1:last]), 1)
    return float(-slope)


def reference_std(z: np.ndarray) -> float:
    """lightly's std_of_l2_normalized: std over samples of each normalised dimension."""
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    return float(unit.std(axis=0, ddof=1).mean())


def reference_lidar(views: np.ndarray, ridge: float = 1e-4) -> float:
    """Thilak et al. 2024: LDA over surrogate classes (an image's views), smooth rank."""
    n, _, d = views.shape
    means = views.mean(axis=1)
    between = np.cov(means, rowvar=False)
    within = sum(np.cov(views[i], rowvar=False) for i in range(n)) / n
    within += ridge * np.trace(within + between) / d * np.eye(d)
    w, v = np.linalg.eigh(within)
    inv_sqrt = v @ np.diag(w ** -0.5) @ v.T
    lam = np.clip(np.linalg.eigvalsh(inv_sqrt @ between @ inv_sqrt), 0, None)
    p = lam / lam.sum() + 1e-7
    return float(np.exp(-np.sum(p * np.log(p))))


def test_rankme_of_a_flat_spectrum_is_the_dimension():
    z = with_singular_values(np.ones(D))
    assert rankme(z) == pytest.approx(reference_rankme(z), rel=1e-10)
    assert rankme(z) == pytest.approx(D, rel=1e-4)


def test_rankme_of_one_direction_is_one():
    s = np.zeros(D)
    s[0] = 3.0
    z = with_singular_values(s)
    assert rankme(z) == pytest.approx(reference_rankme(z), rel=1e-6)
    assert rankme(z) == pytest.approx(1.0, abs=1e-3)
    assert rankme(np.zeros((N, D))) == 0.0


@pytest.mark.parametrize("decay", [0.5, 1.0, 2.0])
def test_rankme_of_a_power_law_matches_the_reference(decay: float):
    z = with_singular_values(np.arange(1, D + 1) ** -decay)
    assert rankme(z) == pytest.approx(reference_rankme(z), rel=1e-10)
    assert 1 < rankme(z) < D
    assert rankme(torch.as_tensor(z, dtype=torch.float32)) == pytest.approx(rankme(z),
                                                                            rel=1e-5)


def test_rankme_counts_the_mean_direction():
    """RankMe is taken on the un-centred matrix: a shared offset is one more direction."""
    s = np.zeros(D)
    s[:2] = 1.0
    z = with_singular_values(s, centred=True)
    shifted = z + np.eye(D)[5] * 0.1
    assert rankme(z) == pytest.approx(2.0, abs=1e-3)
    assert rankme(shifted) == pytest.approx(reference_rankme(shifted), rel=1e-10)
    assert rankme(shifted) > 2.5


@pytest.mark.parametrize("decay", [0.5, 1.0, 1.5, 3.0])
def test_alpha_req_recovers_the_power_law_exponent(decay: float):
    """lambda_k = s_k^2 / (N - 1), so singular values k^(-a/2) give alpha = a."""
    z = with_singular_values(np.arange(1, D + 1) ** (-decay / 2), centred=True)
    assert alpha_req(z) == pytest.approx(decay, abs=1e-6)
    assert alpha_req(z) == pytest.approx(reference_alpha(z), abs=1e-6)


def test_alpha_req_on_a_noisy_power_law_matches_the_reference():
    """Gaussian samples whose covariance decays as k^-1: the estimate is near 1."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal((4000, D)) * np.arange(1, D + 1) ** -0.5
    assert alpha_req(z) == pytest.approx(reference_alpha(z), abs=1e-6)
    assert alpha_req(z) == pytest.approx(1.0, abs=0.15)


def test_alpha_req_of_a_flat_spectrum_is_zero_and_undefined_below_six_directions():
    assert alpha_req(with_singular_values(np.ones(D), centred=True)) == pytest.approx(
        0, abs=1e-6)
    s = np.zeros(D)
    s[:5] = 1.0
    assert math.isnan(alpha_req(with_singular_values(s, centred=True)))


def test_alpha_fit_ranks_skip_the_top_and_the_bottom_half():
    assert alpha_fit_ranks(64) == (2, 32)
    assert alpha_fit_ranks(512) == (6, 256)
    assert alpha_fit_ranks(2048) == (21, 1024)


def test_std_of_l2_normalized_spread_versus_collapsed():
    rng = np.random.default_rng(2)
    spread = rng.standard_normal((5000, D))
    assert std_of_l2_normalized(spread) == pytest.approx(reference_std(spread), rel=1e-10)
    assert std_of_l2_normalized(spread) == pytest.approx(1 / math.sqrt(D), rel=0.02)
    collapsed = np.tile(rng.standard_normal(D), (100, 1))
    assert std_of_l2_normalized(collapsed) == pytest.approx(0, abs=1e-12)
    assert rankme(collapsed) == pytest.approx(1.0, abs=1e-3)
    # scale-free: a collapse with tiny jitter still reads as one
    assert std_of_l2_normalized(collapsed + 1e-4 * spread[:100]) < 0.01 / math.sqrt(D)


def test_lidar_matches_the_reference_and_counts_the_discriminable_directions():
    """n images whose means spread over k directions while their views differ by isotropic
    noise: the whitened between-image covariance has k large eigenvalues."""
    rng = np.random.default_rng(3)
    n, q, k = 500, 2, 8
    signal = np.zeros((n, D))
    signal[:, :k] = rng.standard_normal((n, k)) * 10
    views = signal[:, None, :] + rng.standard_normal((n, q, D))
    assert lidar(views) == pytest.approx(reference_lidar(views), rel=1e-8)
    assert k - 0.5 < lidar(views) < k + 4  # the k signal directions (noise adds a little)
    assert lidar(views * 1000) == pytest.approx(lidar(views), rel=1e-6)  # scale-free
    assert lidar(np.ones((n, q, D))) == 0.0


def test_non_finite_embeddings_give_nan_not_an_error():
    z = np.ones((10, 4))
    z[3, 1] = np.nan
    assert math.isnan(rankme(z)) and math.isnan(alpha_req(z))
    assert math.isnan(std_of_l2_normalized(z)) and math.isnan(lidar(z.reshape(5, 2, 4)))

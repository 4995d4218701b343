"""VICReg's loss against the paper's three terms, written out per dimension."""

from __future__ import annotations

import torch

from pipeline.losses.vicreg import VICRegLoss


def reference_loss(z1: torch.Tensor, z2: torch.Tensor, lam: float, mu: float, nu: float,
                   eps: float = 1e-4) -> torch.Tensor:
    """Bardes et al. (2022), eq. 1-6, with the official code's normalisation (with which
    the default weights 25/25/1 were tuned): s = (1/n) sum_i ||z_i - z'_i||^2 / d (the
    paper's s divided by d), v(Z) = (1/d) sum_j max(0, 1 - sqrt(Var(z^j) + eps)) with the
    unbiased variance, averaged over the two views, c(Z) = (1/d) sum_{i != j} C(Z)_ij^2
    with C(Z) = (1/(n-1)) sum_i (z_i - mean)(z_i - mean)^T, summed over the two views."""
    n, d = z1.shape
    s = sum(((z1[i] - z2[i]) ** 2).sum() for i in range(n)) / n / d

    def v(z: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for j in range(d):
            column = z[:, j]
            mean = sum(column) / n
            variance = sum((x - mean) ** 2 for x in column) / (n - 1)
            total = total + torch.clamp(1 - torch.sqrt(variance + eps), min=0)
        return total / d

    def c(z: torch.Tensor) -> torch.Tensor:
        mean = sum(z[i] for i in range(n)) / n
        cov = sum(torch.outer(z[i] - mean, z[i] - mean) for i in range(n)) / (n - 1)
        return sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    return lam * s + mu * (v(z1) + v(z2)) / 2 + nu * (c(z1) + c(z2))


def test_value_and_gradients_match_the_formula():
    for seed, scale, weights in ((0, 1.0, (25.0, 25.0, 1.0)), (1, 0.3, (1.0, 2.0, 3.0))):
        generator = torch.Generator().manual_seed(seed)
        # scale 0.3: every std below 1, so the variance hinge is active
        z1, z2 = (scale * torch.randn(9, 4, generator=generator, dtype=torch.float64)
                  for _ in range(2))
        z1.requires_grad_(True)
        z2.requires_grad_(True)
        loss = VICRegLoss(*weights)(z1, z2)
        expected = reference_loss(z1, z2, *weights)
        torch.testing.assert_close(loss, expected)
        for got, want in zip(torch.autograd.grad(loss, (z1, z2)),
                             torch.autograd.grad(expected, (z1, z2)), strict=True):
            torch.testing.assert_close(got, want)


def test_each_term_alone():
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    assert VICRegLoss(1.0, 0.0, 0.0)(z, z.clone()).item() == 0.0  # invariance: equal views
    wide = 10 * z  # every dimension's std well above 1: the hinge is silent
    assert VICRegLoss(0.0, 1.0, 0.0)(wide, wide).item() == 0.0
    assert VICRegLoss(0.0, 0.0, 1.0)(z, z).item() > 0.0

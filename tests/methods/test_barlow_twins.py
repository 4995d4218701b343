"""Barlow Twins' loss against the paper's formula, written out element by element."""

from __future__ import annotations

import torch

from pipeline.losses.barlow_twins import BarlowTwinsLoss


def reference_loss(h1: torch.Tensor, h2: torch.Tensor, lambda_: float, eps: float = 1e-5
                   ) -> torch.Tensor:
    """Zbontar et al. (2021), eq. 1-2: each dimension standardised over the batch (the
    official code's BatchNorm1d without affine: biased variance, eps 1e-5), C_ij = sum_b
    z1_bi z2_bj / N, L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2."""
    n, dim = h1.shape

    def standardised(h: torch.Tensor, i: int) -> torch.Tensor:
        column = h[:, i]
        mean = sum(column) / n
        variance = sum((x - mean) ** 2 for x in column) / n
        return (column - mean) / torch.sqrt(variance + eps)

    a = [standardised(h1, i) for i in range(dim)]
    b = [standardised(h2, j) for j in range(dim)]
    loss = torch.zeros((), dtype=h1.dtype)
    for i in range(dim):
        for j in range(dim):
            c = sum(a[i][row] * b[j][row] for row in range(n)) / n
            loss = loss + ((1 - c) ** 2 if i == j else lambda_ * c ** 2)
    return loss


def inputs(seed: int, n: int = 10, dim: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, dim, generator=generator, dtype=torch.float64,
                             requires_grad=True) for _ in range(2))


def test_value_and_gradients_match_the_formula():
    for seed, lambda_ in ((0, 5e-3), (1, 0.5)):
        h1, h2 = inputs(seed)
        loss = BarlowTwinsLoss(lambda_)(h1, h2)
        grads = torch.autograd.grad(loss, (h1, h2))
        expected = reference_loss(h1, h2, lambda_)
        expected_grads = torch.autograd.grad(expected, (h1, h2))
        torch.testing.assert_close(loss, expected)
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want)


def test_identical_decorrelated_views_give_zero():
    # orthogonal columns with mean 0 and equal norms: C is the identity
    h = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    loss = BarlowTwinsLoss(0.5, eps=0.0)(h, h.clone())
    assert abs(loss.item()) < 1e-12


def test_runs_in_fp32_under_bf16_autocast():
    h1, h2 = (x.detach().float() for x in inputs(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = BarlowTwinsLoss()(h1.bfloat16(), h2.bfloat16())
    assert loss.dtype == torch.float32

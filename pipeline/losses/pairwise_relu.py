"""y_ij = sum_d v_d relu(a_id - b_jd) over every pair: the costly part of DSA's relation MLP."""

from __future__ import annotations

import torch


class PairwiseReLU(torch.autograd.Function):
    """y_ij = sum_d v_d relu(a_id - b_jd) for a [n, D] (rows) and b [N, D] (columns).

    Autograd would keep the [n, N, D] activations for backward; this keeps only a, b, v
    and derives all three gradients from one masked tensor: with G = sum_j g_ij [a_id > b_jd]
    and H = sum_i g_ij [a_id > b_jd], dy/da = G v, dy/db = -H v, and since
    relu(x) = x [x > 0], dy/dv = sum_i a_i G_i - sum_j b_j H_j.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b, v)
        return (a[:, None, :] - b[None, :, :]).relu_() @ v

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, b, v = ctx.saved_tensors
        active = torch.where(a[:, None, :] > b[None, :, :], grad[:, :, None], 0.0)
        row_sums, column_sums = active.sum(dim=1), active.sum(dim=0)
        grad_v = (a * row_sums).sum(dim=0) - (b * column_sums).sum(dim=0)
        return row_sums * v, -column_sums * v, grad_v

"""y_ij = sum_d v_d relu(a_id - b_jd) over every pair: the costly part of DSA's relation MLP.

`PairwiseReLU` is the torch formulation, which `torch.compile` fuses into loops inside
`dsa.pair_terms`; on CPU, `dsa_cpu` runs the same sums as a C kernel. The tests hold
`PairwiseReLU` to finite differences and the kernel to `PairwiseReLU`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class PairwiseReLU(torch.autograd.Function):
    """y_ij = sum_d v_d relu(a_id - b_jd) for a [n, D] (rows) and b [N, D] (columns).

    Autograd would take three passes over the n N D pairs backward, one per input. Two do:
    with G = sum_j g_ij [a_id > b_jd] and H = sum_i g_ij [a_id > b_jd], dy/da = G v,
    dy/db = -H v, and since relu(x) = x [x > 0], dy/dv = sum_i a_i G_i - sum_j b_j H_j.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b, v)
        return (F.relu(a[:, None, :] - b[None, :, :]) * v).sum(dim=2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, b, v = ctx.saved_tensors
        active = torch.where(a[:, None, :] > b[None, :, :], grad[:, :, None], 0.0)
        return input_gradients(a, b, v, active.sum(dim=1), active.sum(dim=0))


def input_gradients(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor, row_sums: torch.Tensor,
                    column_sums: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """dy/da, dy/db, dy/dv from the masked sums G (rows) and H (columns)."""
    grad_v = (a * row_sums).sum(dim=0) - (b * column_sums).sum(dim=0)
    return row_sums * v, -column_sums * v, grad_v

"""The pairwise ReLU's torch formulation against finite differences."""

from __future__ import annotations

import torch

from pipeline.losses.pairwise_relu import PairwiseReLU


def test_torch_formulation_backward_matches_finite_differences():
    generator = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(*shape, dtype=torch.float64, generator=generator,
                               requires_grad=True) for shape in ((5, 4), (6, 4), (4,)))
    assert torch.autograd.gradcheck(PairwiseReLU.apply, inputs)

"""Projection and prediction heads: one MLP builder shared by every method."""

from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Sequential):
    """Linear(-BN)-ReLU blocks then a final Linear (optionally followed by BN).

    `num_layers` counts Linear layers: 2 is SimCLR's projector and BYOL's predictor.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int = 2,
                 batch_norm: bool = True, last_batch_norm: bool = False):
        layers: list[nn.Module] = []
        dim = input_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, output_dim, bias=not last_batch_norm))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(output_dim, affine=False))
        super().__init__(*layers)

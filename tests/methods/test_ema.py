"""EMA targets: the cosine momentum schedule and the update rule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from pipeline.methods.ema import cosine_momentum, ema_update, frozen_copy


def test_cosine_momentum_rises_from_base_to_one():
    total, base = 100, 0.99
    values = [cosine_momentum(k, total, base) for k in range(total + 1)]
    assert values[0] == pytest.approx(base)
    assert values[-1] == pytest.approx(1.0)
    assert values[50] == pytest.approx(1 - (1 - base) / 2)
    assert values[25] == pytest.approx(1 - (1 - base) * (math.cos(math.pi / 4) + 1) / 2)
    assert all(a <= b for a, b in itertools.pairwise(values))


def test_ema_update_moves_target_by_one_minus_momentum_and_copies_buffers():
    online = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    target = frozen_copy(online)
    assert not any(p.requires_grad for p in target.parameters())
    before = [p.clone() for p in target.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
        online[1].running_mean.fill_(3.0)
    ema_update(target, online, momentum=0.9)
    for old, new, o in zip(before, target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * o)
    torch.testing.assert_close(target[1].running_mean, torch.full((2,), 3.0))

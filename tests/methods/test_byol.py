"""BYOL: the regression loss on hand cases, and the target following the online net."""

from __future__ import annotations

import pytest
import torch

from pipeline.losses.byol import BYOLLoss, regression
from pipeline.methods import build_method
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import BYOLMethod, SmallCNNBackbone


def test_byol_loss_hand_cases():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    aligned = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    opposed = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    assert float(regression(p, aligned).detach()) == pytest.approx(0.0)
    assert float(regression(p, opposed).detach()) == pytest.approx(3.0)  # (2 + 4) / 2
    # symmetrised: view 1 predicts view 2's target and vice versa
    assert float(BYOLLoss()(p, p, opposed, aligned).detach()) == pytest.approx(3.0)
    t = torch.tensor([[1.0, 1.0], [1.0, 1.0]], requires_grad=True)
    BYOLLoss()(p, p, t, t).backward()
    assert t.grad is None  # the target is a stop-gradient


def test_target_tracks_online_with_the_scheduled_momentum():
    torch.manual_seed(0)
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])
    method = build_method(BYOLMethod(name="byol", base_momentum=0.9), encoder, 10)
    x = torch.rand(8, 1, 8, 8)
    outputs = method(x, x.flip(-1), torch.zeros(8, dtype=torch.long), x)
    outputs["loss"].backward()
    assert all(p.grad is None for p in method.target.parameters())
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in method.target.parameters()]
    method.after_optimizer_step(0, 10)  # momentum = base at step 0
    for old, new, o in zip(before, method.target.parameters(), method.encoder.parameters(),
                           strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * o)

"""Truncated triplet: deputy selection and loss against a plain loop, hand cases, auto skip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.methods.triplet import auto_skip, random_resize, truncated_triplet_loss


def reference_loss(p, t, skip, k, gamma, margin):
    """One anchor at a time, sorting its negatives in Python."""
    losses = []
    for i in range(p.shape[0]):
        positive = float(-2 * p[i] @ t[i])
        negatives = sorted(float(-2 * p[i] @ t[j]) for j in range(t.shape[0]) if j != i)
        deputy = sum(negatives[skip:skip + k]) / k
        losses.append(max(0.0, gamma * positive - deputy + margin))
    return sum(losses) / len(losses)


@pytest.mark.parametrize(("skip", "k", "margin"), [(1, 9, 100.0), (0, 1, 0.0), (3, 5, 0.5)])
def test_loss_matches_reference_loop(skip, k, margin):
    generator = torch.Generator().manual_seed(skip)
    p = F.normalize(torch.randn(24, 8, generator=generator, dtype=torch.float64), dim=1)
    t = F.normalize(torch.randn(24, 8, generator=generator, dtype=torch.float64), dim=1)
    loss = truncated_triplet_loss(p, t, skip=skip, k=k, gamma=2.0, margin=margin)
    assert float(loss) == pytest.approx(reference_loss(p, t, skip, k, 2.0, margin), abs=1e-9)


def test_hand_computed_case_and_deputy_gradient():
    # Three anchors on the unit circle; anchor 0's negatives are t1 (cos 0) and t2 (cos -1).
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # skip=1, k=1: the deputy of every anchor is its second-nearest negative.
    # anchor 0: d_ap = -2; negatives d = 0 (t1), 2 (t2) -> deputy 2 -> 2*-2 - 2 + 10 = 4
    # anchor 1: d_ap = -2; negatives d = 0, 0 -> deputy 0 -> -4 - 0 + 10 = 6
    # anchor 2: symmetric to anchor 0 -> 4
    loss = truncated_triplet_loss(p, t, skip=1, k=1, gamma=2.0, margin=10.0)
    assert float(loss.detach()) == pytest.approx((4 + 6 + 4) / 3)
    loss.backward()
    # d loss / d p_0 = (gamma * -2 t_0 + 2 t_2) / 3 (the deputy of anchor 0 is t_2)
    torch.testing.assert_close(p.grad[0], (2 * -2 * t[0] + 2 * t[2]) / 3)


def test_hinge_is_inactive_below_the_margin():
    p = F.normalize(torch.randn(6, 4), dim=1)
    loss = truncated_triplet_loss(p, p, skip=0, k=2, gamma=1.0, margin=0.0)
    assert float(loss) == pytest.approx(0.0)  # positives are closer than any negative


def test_skip_plus_k_beyond_negatives_is_an_error():
    p = F.normalize(torch.randn(5, 4), dim=1)
    with pytest.raises(ValueError, match="exceeds the 4 negatives"):
        truncated_triplet_loss(p, p, skip=1, k=4)


def test_auto_skip_is_the_binomial_quantile():
    for n, classes in [(255, 10), (127, 7), (4095, 1000), (10, 2)]:
        r = auto_skip(n, classes)
        cdf = [sum(math.comb(n, i) * (1 / classes) ** i * (1 - 1 / classes) ** (n - i)
                   for i in range(j + 1)) for j in (r - 1, r)]
        assert cdf[1] >= 0.99
        assert r == 0 or cdf[0] < 0.99
    assert auto_skip(255, 10) > auto_skip(255, 100)


def test_random_resize_stays_in_range():
    images = torch.rand(2, 1, 20, 20)
    torch.manual_seed(0)
    sides = {random_resize(images, (0.5, 1.0)).shape[-1] for _ in range(30)}
    assert sides <= set(range(10, 21)) and len(sides) > 1


def test_multi_resolution_trains_on_resized_views():
    from pipeline.methods import build_method
    from pipeline.nets.backbones import Encoder
    from pipeline.params import SmallCNNBackbone, TripletMethod

    torch.manual_seed(0)
    cfg = TripletMethod.model_validate({"name": "triplet", "k": 3,
                                        "multi_resolution": {"online": [0.5, 1.0]}})
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])
    method = build_method(cfg, encoder, 10)
    x = torch.rand(12, 1, 16, 16)
    outputs = method(x, x.flip(-1), torch.zeros(12, dtype=torch.long), x)
    outputs["loss"].backward()
    assert torch.isfinite(outputs["loss"])
    assert method.encoder.backbone[0][0].weight.grad.abs().sum() > 0

"""Truncated triplet: deputy selection and loss against a plain loop, hand cases, auto skip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.losses.triplet import auto_skip, truncated_triplet_loss


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


def test_auto_skip_at_a_global_batch_of_8192():
    """comb(n, r) * p**r overflowed a float from n of about 1030 (8 GPUs x 128)."""
    from scipy.stats import binom

    for n, classes in [(8191, 1000), (8191, 10), (2047, 2)]:
        r = auto_skip(n, classes)
        assert binom.cdf(r, n, 1 / classes) >= 0.99
        assert r == 0 or binom.cdf(r - 1, n, 1 / classes) < 0.99


def test_loss_runs_in_fp32_under_bf16_autocast():
    """Margin 100 puts the loss near 200, where bf16 steps by 1: the criterion leaves
    autocast, so the loss and its gradients equal the fp32 ones."""
    from pipeline.methods import build_method
    from pipeline.nets.backbones import Encoder
    from pipeline.params.methods import SmallCNNBackbone, TripletMethod

    torch.manual_seed(0)
    cfg = TripletMethod.model_validate({"name": "triplet", "k": 3})
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])
    method = build_method(cfg, encoder, 10)
    p1, p2, t1, t2 = (torch.randn(16, 8, requires_grad=True) for _ in range(4))
    exact = method.criterion(p1, p2, t1, t2)
    grads = torch.autograd.grad(exact, (p1, p2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # what bf16 autocast hands the criterion: bf16 projections
        low = method.criterion(*(x.detach().bfloat16() for x in (p1, p2, t1, t2)))
    assert low.dtype == torch.float32
    inputs = [x.detach().bfloat16().float().requires_grad_() for x in (p1, p2, t1, t2)]
    rounded = method.criterion(*inputs)
    torch.testing.assert_close(low, rounded, rtol=1e-6, atol=1e-5)
    assert float(exact.detach()) > 150  # where bf16 would step by 1
    torch.testing.assert_close(torch.autograd.grad(rounded, inputs[:2])[0], grads[0],
                               rtol=0.05, atol=0.05)

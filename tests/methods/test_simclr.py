import math

import torch
import torch.nn.functional as F

from pipeline.losses.ntxent import NTXentLoss
from pipeline.methods import build_method
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import SimCLRMethod, SmallCNNBackbone, SupervisedMethod


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """Plain loop over anchors: positive = the other view, candidates = all but self."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        logits = [float(z[i] @ z[j]) / temperature for j in range(2 * n) if j != i]
        log_sum = math.log(sum(math.exp(v) for v in logits))
        total += log_sum - float(z[i] @ z[positive]) / temperature
    return total / (2 * n)


def test_nt_xent_matches_reference_loop():
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    loss = NTXentLoss(temperature=0.5)(z1, z2)
    assert abs(loss.item() - reference_nt_xent(z1, z2, 0.5)) < 1e-5


def test_nt_xent_hand_computed_case():
    # Two anchors per view, orthogonal pairs: every positive has similarity 1, the others 0.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = NTXentLoss(temperature=1.0)(z1, z1.clone())
    expected = math.log(math.e + 2) - 1  # candidates: positive (e^1) and two orthogonal (e^0)
    assert abs(loss.item() - expected) < 1e-6


def encoder():
    return Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])


def test_methods_return_a_differentiable_loss():
    views = torch.rand(2, 8, 1, 8, 8).unbind(0)
    labels = torch.arange(8) % 3
    for cfg in (SimCLRMethod(name="simclr"), SupervisedMethod(name="supervised")):
        method = build_method(cfg, encoder(), num_classes=3)
        outputs = method(*views, labels)
        outputs["loss"].backward()
        grads = [p.grad for p in method.encoder.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)

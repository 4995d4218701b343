"""DSA: each vectorised piece against a plain loop over samples, composition, precision."""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from pydantic import TypeAdapter

from pipeline.losses.dsa import DSALoss, RelationNet, good_neighbour_scores
from pipeline.methods import build_method
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import DSARegulator, Method, SmallCNNBackbone


def reference_scores(features: torch.Tensor, k: int, mu: int) -> list[float]:
    """The definition, one sample at a time (as the official code does)."""
    e = F.normalize(features, dim=1)
    n = e.shape[0]
    neighbours = []
    for i in range(n):
        similarity = [(float(e[i] @ e[j]), j) for j in range(n) if j != i]
        neighbours.append({j for _, j in sorted(similarity, reverse=True)[:k]})
    scores = []
    for i in range(n):
        good = 0
        for j in neighbours[i]:
            c_ij = sum(1 for m in neighbours[j] if i in neighbours[m])
            good += c_ij > mu
        scores.append(good / k)
    return scores


@pytest.mark.parametrize(("n", "k", "mu"), [(40, 5, 1), (30, 20, 1), (25, 3, 0)])
def test_good_neighbour_scores_match_the_loop(n, k, mu):
    features = torch.randn(n, 6, generator=torch.Generator().manual_seed(n))
    torch.testing.assert_close(good_neighbour_scores(features, k, mu),
                               torch.tensor(reference_scores(features, k, mu)))


def test_an_isolated_outlier_scores_lowest():
    generator = torch.Generator().manual_seed(0)
    cluster = torch.randn(30, 4, generator=generator) * 0.1 + torch.tensor([5.0, 0, 0, 0])
    outlier = torch.tensor([[0.0, 0.0, 0.0, 5.0]])
    scores = good_neighbour_scores(torch.cat([cluster, outlier]), k=5)
    assert float(scores[-1]) < float(scores[:-1].mean())


@pytest.mark.parametrize("norm", ["sigmoid", "row_l1"])
def test_relation_blocks_match_the_pairwise_mlp(norm):
    torch.manual_seed(0)
    net = RelationNet(8, norm)
    ha, hb = torch.randn(5, 8), torch.randn(7, 8)
    mlp = torch.nn.Sequential(net.hidden, torch.nn.ReLU(), net.out)
    logits = torch.tensor([[float(mlp(ha[i] - hb[j])) for j in range(7)] for i in range(5)])
    if norm == "sigmoid":
        expected = torch.sigmoid(logits)
    else:
        row_sums = F.relu(logits).sum(dim=1, keepdim=True).clamp(min=1e-12)  # all-0 rows
        expected = F.relu(logits) / row_sums
    torch.testing.assert_close(net(ha, hb), expected)
    # The cross-view block uses h^1_i - h^2_j, not the same-view difference (official bug).
    assert not torch.allclose(net(ha, hb[:5]), net(ha, ha))


def _loss_and_gradients(loss: DSALoss, inputs: list[torch.Tensor], autocast: bool = False
                        ) -> list[torch.Tensor]:
    """DSA's terms and the gradients of its loss for the embeddings and relation weights;
    the forward pass under bf16 autocast when asked, backward outside it (as the loop)."""
    loss.zero_grad()
    inputs = [x.detach().requires_grad_(i < 2) for i, x in enumerate(inputs)]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        terms = loss(*inputs)
    terms["loss"].backward()
    return [*terms.values(), inputs[0].grad, inputs[1].grad,
            *(p.grad for p in loss.relation.parameters())]


def _dsa_inputs(n: int = 12, dim: int = 8) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(n, dim, generator=generator) for _ in range(5)]


def test_dsa_runs_in_fp32_under_bf16_autocast():
    """Under the loop's bf16 autocast, kNN ranks, distances and pair terms stay fp32: the
    loss and its gradients equal the fp32 ones to fp32 rounding."""
    torch.manual_seed(0)
    loss, inputs = DSALoss(8, k=4, lambda2=0.5), _dsa_inputs()
    exact = _loss_and_gradients(loss, inputs)
    autocast = _loss_and_gradients(loss, inputs, autocast=True)
    for low, high in zip(autocast, exact, strict=True):
        assert low.dtype == high.dtype
        torch.testing.assert_close(low, high, rtol=1e-5, atol=1e-6)


def _cxx_compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


@pytest.mark.skipif(_cxx_compiler() is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_dsa_matches_eager_values_and_gradients():
    """What `train.compile: true` runs: the whole loss compiled, forward and backward."""
    torch.manual_seed(0)
    loss, inputs = DSALoss(8, k=4, lambda2=0.5), _dsa_inputs()
    eager = _loss_and_gradients(loss, inputs)
    compiled = _loss_and_gradients(torch.compile(loss), inputs)
    for ours, reference in zip(compiled, eager, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def reference_dsa(z1, z2, e1, e2, e0, relation, cfg):
    """Steps 1-5 of methods.md with explicit loops over blocks and pairs."""
    h, e = {1: z1, 2: z2}, {1: F.normalize(e1, dim=1), 2: F.normalize(e2, dim=1)}
    z = {a: F.normalize(h[a], dim=1) for a in (1, 2)}
    s = reference_scores(e0, cfg.k, cfg.mu)
    n = z1.shape[0]
    mlp = torch.nn.Sequential(relation.hidden, torch.nn.ReLU(), relation.out)
    terms, regulariser, positives, negatives = [], 0.0, [], []
    for a, b in ((1, 1), (2, 2), (1, 2), (2, 1)):
        squares = 0.0
        for i in range(n):
            for j in range(n):
                m = float(torch.sigmoid(mlp(h[a][i] - h[b][j])))
                if i == j and a != b:
                    positives.append(m)
                elif i != j:
                    negatives.append(m)
                p = math.exp(-float((e[a][i] - e[b][j]).norm()) / cfg.prior_temperature)
                squares += (m - p) ** 2
                if a == b and i == j:
                    continue
                d = float((z[a][i] - z[b][j]).norm())
                terms.append(math.exp(s[i] * d * (2 * m - 1) / cfg.temperature))
        regulariser += math.sqrt(squares)
    weighted = math.log(1 + sum(terms) / len(terms))
    return (weighted, cfg.lambda2 * regulariser / 4, sum(s) / n,
            sum(positives) / len(positives), sum(negatives) / len(negatives))


def test_dsa_terms_match_the_reference_loops():
    torch.manual_seed(0)
    cfg = DSARegulator(name="dsa", k=4, lambda2=0.5)
    loss = _method("simclr", cfg).regulator.criterion
    z1, z2, e1, e2, e0 = (torch.randn(10, 16) for _ in range(5))
    terms = loss(z1, z2, e1, e2, e0)
    weighted, regulariser, s_mean, m_positive, m_negative = reference_dsa(
        z1, z2, e1, e2, e0, loss.relation, cfg)
    assert float(terms["dsa_weighted"]) == pytest.approx(weighted, rel=1e-5)
    assert float(terms["dsa_regulariser"]) == pytest.approx(regulariser, rel=1e-5)
    assert float(terms["dsa_s_mean"]) == pytest.approx(s_mean, rel=1e-6)
    assert float(terms["loss"]) == pytest.approx(weighted + regulariser, rel=1e-5)
    assert float(terms["dsa_m_positive"]) == pytest.approx(m_positive, rel=1e-5)
    assert float(terms["dsa_m_negative"]) == pytest.approx(m_negative, rel=1e-5)


def _method(name: str, regulator: DSARegulator | None, width: int = 4):
    cfg = TypeAdapter(Method).validate_python(
        {"name": name, "projector": {"hidden_dim": 32, "output_dim": 16}})
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=width), 1, [0.5], [0.25])
    return build_method(cfg, encoder, 10, regulator)


@pytest.mark.parametrize("name", ["simclr", "byol", "triplet"])
def test_dsa_composes_with_every_method(name):
    torch.manual_seed(0)
    method = _method(name, DSARegulator(name="dsa", k=5))
    # the ema prior reuses the base method's target when there is one
    assert (method.regulator.prior.network is None) == (name != "simclr")
    x = torch.rand(24, 1, 8, 8)
    outputs = method(x, x.flip(-1), torch.zeros(24, dtype=torch.long), x)
    assert {"base_loss", "dsa_weighted", "dsa_regulariser", "dsa_s_mean", "dsa_m_positive",
            "dsa_m_negative"} <= set(outputs)
    assert float(outputs["loss"]) > float(outputs["base_loss"])
    outputs["loss"].backward()
    assert method.regulator.criterion.relation.hidden.weight.grad is not None
    assert method.encoder.backbone[0][0].weight.grad.abs().sum() > 0
    method.after_optimizer_step(1, 10)

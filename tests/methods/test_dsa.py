"""DSA: each vectorised piece against a plain loop over samples, composition, prior errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import TypeAdapter

from pipeline.errors import UserError
from pipeline.methods import build_method
from pipeline.methods.dsa import (
    DSA,
    RelationNet,
    check_prior,
    compiled_pair_terms,
    good_neighbour_scores,
    pair_terms,
    with_absolute_prior_path,
)
from pipeline.nets.backbones import Encoder, save_encoder
from pipeline.params import DSARegulator, Method, RunConfig, SmallCNNBackbone


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


def test_compiled_pair_terms_match_eager_values_and_gradients():
    torch.manual_seed(0)
    n, dim = 6, 8
    relation = RelationNet(dim)
    rows_h = torch.randn(2 * n, dim, requires_grad=True)
    rows_prior = torch.randn(2 * n, dim)
    s = torch.rand(n)
    results = []
    for function in (pair_terms, compiled_pair_terms()):
        relation.zero_grad()
        rows_h.grad = None
        terms, squares, m_positive, m_negative = function(
            relation, rows_h, rows_h, rows_prior, rows_prior, s, 0, 0.5, 0.5)
        (terms + squares.sum()).backward()
        results.append((terms, squares, m_positive, m_negative, rows_h.grad,
                        relation.hidden.weight.grad, relation.out.weight.grad))
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


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
    method = _method("simclr", cfg)
    regulator = method.regulator
    z1, z2, e1, e2, e0 = (torch.randn(10, 16) for _ in range(5))
    terms = regulator(z1, z2, e1, e2, e0)
    weighted, regulariser, s_mean, m_positive, m_negative = reference_dsa(
        z1, z2, e1, e2, e0, regulator.relation, cfg)
    assert float(terms["dsa_weighted"]) == pytest.approx(weighted, rel=1e-5)
    assert float(terms["dsa_regulariser"]) == pytest.approx(regulariser, rel=1e-5)
    assert float(terms["dsa_s_mean"]) == pytest.approx(s_mean, rel=1e-6)
    assert float(terms["dsa_loss"]) == pytest.approx(weighted + regulariser, rel=1e-5)
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
    assert (method.regulator.prior is None) == (name != "simclr")
    x = torch.rand(24, 1, 8, 8)
    outputs = method(x, x.flip(-1), torch.zeros(24, dtype=torch.long), x)
    assert {"base_loss", "dsa_weighted", "dsa_regulariser", "dsa_s_mean", "dsa_m_positive",
            "dsa_m_negative"} <= set(outputs)
    assert float(outputs["loss"]) > float(outputs["base_loss"])
    outputs["loss"].backward()
    assert method.regulator.relation.hidden.weight.grad is not None
    assert method.encoder.backbone[0][0].weight.grad.abs().sum() > 0
    method.after_optimizer_step(1, 10)


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_prior_pass_runs_in_the_asked_precision(name):
    """fp32 stays fp32 under the loop's bf16 autocast; bf16 returns fp32 features close
    to them (the prior only feeds exp(-d / tau_p) and kNN ranks)."""
    torch.manual_seed(0)
    method = _method(name, DSARegulator(name="dsa", prior_precision="fp32"))
    regulator = method.regulator
    x = torch.rand(64, 1, 8, 8)
    exact = regulator.prior_features(method, x, x.flip(-1), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert all(torch.equal(a, b) for a, b in zip(
            regulator.prior_features(method, x, x.flip(-1), x), exact, strict=True)
            if a is not None)
    regulator.cfg = regulator.cfg.model_copy(update={"prior_precision": "bf16"})
    for low, high in zip(regulator.prior_features(method, x, x.flip(-1), x), exact,
                         strict=True):
        if high is not None:
            assert low.dtype == torch.float32 and not torch.equal(low, high)
            torch.testing.assert_close(low, high, rtol=0.05, atol=0.05)


def _run(regulator: dict) -> RunConfig:
    return RunConfig.model_validate({
        "dataset": "digits", "backbone": {"name": "small_cnn", "width": 4},
        "method": {"name": "simclr"}, "regulator": {"name": "dsa", **regulator}})


def test_missing_priors_are_user_errors_naming_the_key(tmp_path: Path):
    with pytest.raises(UserError, match=r"runs\.r\.regulator\.prior_path: .*not found"):
        check_prior("r", _run({"prior": "checkpoint", "prior_path": str(tmp_path / "x.pt")}))
    with pytest.raises(UserError, match=r"runs\.r\.regulator\.prior_path: torchvision"):
        check_prior("r", _run({"prior": "torchvision",
                               "prior_path": str(tmp_path / "resnet18.pth")}))


def test_checkpoint_prior_is_a_frozen_encoder(tmp_path: Path):
    torch.manual_seed(0)
    path = tmp_path / "encoder.pt"
    save_encoder(Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25]), path)
    run = _run({"prior": "checkpoint", "prior_path": str(path)})
    check_prior("r", run)
    method = _method("simclr", run.regulator)
    assert isinstance(method.regulator, DSA)
    assert not any(p.requires_grad for p in method.regulator.prior.parameters())
    x = torch.rand(24, 1, 8, 8)
    method(x, x, torch.zeros(24, dtype=torch.long), x)["loss"].backward()
    assert not method.regulator.prior.training


def test_torchvision_prior_reads_local_weights(tmp_path: Path):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    run = _run({"prior": "torchvision", "prior_path": str(weights)})
    check_prior("r", run)
    method = _method("simclr", run.regulator)
    x = torch.rand(24, 1, 8, 8)  # grey 8x8: repeated to RGB, upsampled to 32 px
    outputs = method(x, x.flip(-1), torch.zeros(24, dtype=torch.long), x)
    assert torch.isfinite(outputs["loss"])
    assert not any(p.requires_grad for p in method.regulator.prior.parameters())


def test_ray_workers_get_the_prior_path_made_absolute(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative prior_path is relative to the stage's directory
    run = _run({"prior": "checkpoint", "prior_path": "models/simclr/encoder.pt"})
    absolute = with_absolute_prior_path(run)
    assert absolute.regulator.prior_path == str(tmp_path / "models/simclr/encoder.pt")
    assert absolute.model_copy(update={"regulator": run.regulator}) == run
    assert with_absolute_prior_path(_run({"prior": "ema"})) == _run({"prior": "ema"})

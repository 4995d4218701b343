"""The probes against scikit-learn and against hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from benchmarks.linear_probe import realistic_features
from pipeline.classify import fit_logistic, knn_probe, nearest_neighbours, topk_accuracy
from pipeline.evaluate.probe import (
    evaluate_probes,
    full_batch_bytes,
    linear_probe,
    majority_knn_probe,
    stratified_subset,
)
from pipeline.params.evaluation import EvaluateConfig, LinearProbeConfig, MinibatchProbeConfig


def mixture(n: int, dim: int, classes: int, spread: float, seed: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian classes (so accuracy is informative, neither 0 nor 1)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dim))
    labels = rng.integers(0, classes, size=n)
    x = means[labels] + spread * rng.normal(size=(n, dim))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(labels)


def test_linear_probe_matches_scikit_learn_logistic_regression():
    x, y = mixture(2500, 32, 8, 2.5, seed=1)
    train_x, train_y, test_x, test_y = x[:1500], y[:1500], x[1500:], y[1500:]
    decay = 1e-2
    ours = linear_probe(train_x, train_y, test_x, test_y, weight_decays=(decay,), max_iter=500)

    scaler = StandardScaler().fit(train_x.double().numpy())
    # sklearn minimises 0.5 ||W||^2 + C * sum(losses); ours mean(loss) + 0.5 * decay ||W||^2
    sklearn = LogisticRegression(C=1 / (decay * len(train_y)), max_iter=5000, tol=1e-10)
    sklearn.fit(scaler.transform(train_x.double().numpy()), train_y.numpy())
    expected = sklearn.score(scaler.transform(test_x.double().numpy()), test_y.numpy())
    assert 0.4 < expected < 0.98  # the case is neither trivial nor hopeless
    assert abs(ours["linear_top1"] - expected) <= 0.01


def test_fit_logistic_reaches_scikit_learn_weights():
    x, y = mixture(600, 10, 3, 1.5, seed=2)
    x = ((x - x.mean(0)) / x.std(0)).double()  # fit_logistic works in x's dtype
    decay = 1e-1
    linear = fit_logistic(x, y, 3, decay, max_iter=500, tolerance=1e-9)
    sklearn = LogisticRegression(C=1 / (decay * len(y)), max_iter=5000, tol=1e-12)
    sklearn.fit(x.double().numpy(), y.numpy())
    ours = torch.softmax(linear(x.double()), 1).numpy()
    theirs = sklearn.predict_proba(x.double().numpy())
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_weight_decay_is_chosen_on_validation_and_reported():
    x, y = mixture(800, 64, 4, 3.0, seed=3)
    metrics = linear_probe(x[:400], y[:400], x[400:], y[400:],
                           weight_decays=(1e-6, 1e-2, 10.0), val_fraction=0.25, seed=0)
    scores = {d: metrics[f"linear_val_top1_wd{d:g}"] for d in (1e-6, 1e-2, 10.0)}
    best = max(sorted(scores, reverse=True), key=scores.get)
    assert metrics["linear_weight_decay"] == best
    assert metrics["linear_val_top1"] == scores[best]
    assert metrics["linear_top1"] <= metrics["linear_top5"]


def test_stratified_subset_keeps_every_class_and_is_seeded():
    labels = torch.tensor([0] * 300 + [1] * 100 + [2] * 5)
    chosen = stratified_subset(labels, 0.1, seed=7)
    counts = torch.bincount(labels[chosen], minlength=3).tolist()
    assert counts == [30, 10, 1]
    assert torch.equal(chosen, stratified_subset(labels, 0.1, seed=7))
    assert not torch.equal(chosen, stratified_subset(labels, 0.1, seed=8))


def test_topk_accuracy_counts_label_among_best_k():
    scores = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0, 1, 2])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 5) == 1.0  # k capped at the number of classes


def test_knn_weighted_votes_differ_from_majority_as_constructed():
    # the query's nearest neighbour is class 1 and very close; its next 4 are class 0 and
    # far: temperature-weighted kNN follows the near one, majority 5-NN the many
    train_x = torch.tensor([[1.0, 0.0]] + [[0.0, 1.0]] * 4)
    train_y = torch.tensor([1, 0, 0, 0, 0])
    query, query_y = torch.tensor([[1.0, 0.05]]), torch.tensor([1])
    assert knn_probe(train_x, train_y, query, query_y, k=5, temperature=0.07) == 1.0
    assert majority_knn_probe(train_x, train_y, query, query_y, k=5) == 0.0


def test_majority_knn_breaks_ties_towards_nearer_neighbours():
    angles = torch.tensor([0.1, 0.2, 0.3, 0.4])  # similarity falls with the angle
    train_x = torch.stack([angles.cos(), angles.sin()], dim=1)
    query = torch.tensor([[1.0, 0.0]])
    assert majority_knn_probe(train_x, torch.tensor([3, 5, 5, 3]), query,
                              torch.tensor([3]), k=4) == 1.0
    assert majority_knn_probe(train_x, torch.tensor([5, 3, 3, 5]), query,
                              torch.tensor([5]), k=4) == 1.0


def test_probes_handle_arbitrary_class_ids():
    x, y = mixture(300, 8, 3, 0.1, seed=4)
    y = y + 7  # held-out digits 7-9
    metrics = linear_probe(x[:200], y[:200], x[200:], y[200:])
    assert metrics["linear_top1"] == 1.0
    assert knn_probe(x[:200], y[:200], x[200:], y[200:], k=20) == 1.0


def test_evaluate_probes_reports_every_protocol():
    x, y = mixture(1200, 16, 5, 2.0, seed=5)
    cfg = EvaluateConfig()
    metrics = evaluate_probes(x[:900], y[:900], x[900:], y[900:], cfg)
    for key in ("linear_top1", "linear_top5", "linear_weight_decay", "linear_val_top1",
                "knn20_top1", "knn200_top1", "majority5nn_top1", "lowshot1pct_top1",
                "lowshot10pct_top1"):
        assert key in metrics
    assert metrics["lowshot1pct_labels"] < metrics["lowshot10pct_labels"] < 900
    # fewer labels cannot help on this well-specified problem by more than noise
    assert metrics["lowshot1pct_top1"] <= metrics["linear_top1"] + 0.02


def test_knn_running_top_k_over_chunks_equals_the_exhaustive_search():
    train_x, _ = mixture(500, 16, 4, 1.0, seed=6)
    test_x, _ = mixture(37, 16, 4, 1.0, seed=7)
    exhaustive = (F.normalize(test_x, dim=1) @ F.normalize(train_x, dim=1).T).topk(20, dim=1)
    sims, index = nearest_neighbours(train_x, test_x, 20, "cpu", query_chunk=5, bank_chunk=7)
    torch.testing.assert_close(sims, exhaustive.values)
    assert torch.equal(index, exhaustive.indices)  # random features: no ties
    # a bank smaller than k: every row, nearest first
    sims, index = nearest_neighbours(train_x[:3], test_x, 20, "cpu", bank_chunk=2)
    assert index.shape == (37, 3) and (sims[:, :-1] >= sims[:, 1:]).all()


def test_one_neighbour_search_serves_every_k():
    x, y = mixture(900, 16, 5, 2.0, seed=8)
    metrics = evaluate_probes(x[:700], y[:700], x[700:], y[700:], EvaluateConfig())
    for k in (20, 200):
        assert metrics[f"knn{k}_top1"] == knn_probe(x[:700], y[:700], x[700:], y[700:], k)
    assert metrics["majority5nn_top1"] == majority_knn_probe(x[:700], y[:700], x[700:], y[700:])


def test_solver_follows_the_full_batch_budget():
    x, y = mixture(400, 8, 3, 1.0, seed=9)
    assert full_batch_bytes(400, 8, 3) == 4 * 400 * (8 + 6)
    small = linear_probe(x[:300], y[:300], x[300:], y[300:], full_batch_gib=1e-4)
    large = linear_probe(x[:300], y[:300], x[300:], y[300:], full_batch_gib=1e-6)
    assert (small["linear_solver"], large["linear_solver"]) == ("lbfgs", "minibatch")


def test_minibatch_probe_is_within_half_a_point_of_lbfgs():
    """The mini-batch optimiser (forced by a zero budget) against full-batch L-BFGS on
    features shaped like pooled ResNet-18 features, with the default decay sweep."""
    x, y = realistic_features(15_000, seed=0)
    split = (x[:10_000], y[:10_000], x[10_000:], y[10_000:])
    decays = LinearProbeConfig().weight_decays
    lbfgs = linear_probe(*split, decays)
    minibatch = linear_probe(*split, decays, full_batch_gib=1e-9,
                             minibatch=MinibatchProbeConfig(batch_size=1024))
    assert (lbfgs["linear_solver"], minibatch["linear_solver"]) == ("lbfgs", "minibatch")
    assert 0.6 < lbfgs["linear_top1"] < 0.9  # neither trivial nor hopeless
    assert abs(minibatch["linear_top1"] - lbfgs["linear_top1"]) <= 0.005


def test_minibatch_probe_is_seeded_and_keeps_the_protocol():
    x, y = mixture(1200, 16, 5, 2.0, seed=10)
    y = y + 3  # arbitrary class ids
    run = lambda: linear_probe(x[:900], y[:900], x[900:], y[900:], (1e-4, 1e-2),  # noqa: E731
                               full_batch_gib=1e-9, minibatch=MinibatchProbeConfig(epochs=3))
    first, second = run(), run()
    assert first == second
    assert first["linear_weight_decay"] in (1e-4, 1e-2)
    assert first["linear_val_top1"] == first[f"linear_val_top1_wd{first['linear_weight_decay']:g}"]
    assert first["linear_top1"] <= first["linear_top5"]

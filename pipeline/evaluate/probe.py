"""Probes of frozen features: linear (L-BFGS logistic regression), kNN, low-shot.

Every probe takes features [N, D] and integer labels [N] (any class ids, e.g. held-out
digits 7-9) and returns plain floats, so stages can write them straight into metrics JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pipeline.classify import (
    contiguous_labels,
    fit_logistic,
    knn_probe,
    neighbours,
    standardise,
    topk_accuracy,
)
from pipeline.evaluate.features import load_features
from pipeline.metrics.probe import percent

# The validation search only ranks the weight decays, which a 10x looser tolerance already
# does (5x faster); the chosen decay is then refitted at the full tolerance.
SEARCH_LOOSENESS = 10.0


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded, stratified `fraction` of `labels`, >= 1 per class.

    Used to carve the validation split and to pick the low-shot labels: each class keeps
    round(fraction * its size) samples, so class balance survives even at 1%.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        count = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(chosen).sort().values


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, weight_decays: Sequence[float] = (1e-4,),
                 val_fraction: float = 0.1, max_iter: int = 300, seed: int = 0,
                 tolerance: float = 1e-4) -> dict[str, float]:
    """Logistic-regression probe with its weight decay chosen on a validation split.

    The validation split is a seeded, stratified `val_fraction` of the training features;
    each candidate weight decay is fitted on the rest and scored there (ties go to the
    larger, smoother decay) at a looser tolerance; the winner is refitted on the whole
    training split (warm-started from its validation fit) at `tolerance` and tested. With
    a single candidate no split is carved. Returns top-1/top-5 on test, the train top-1
    (to spot under-fitting) and the chosen settings.
    """
    train_y, test_y, num_classes = contiguous_labels(train_y, test_y)
    candidates = sorted(set(weight_decays), reverse=True)
    metrics: dict[str, float] = {}
    init = None
    if len(candidates) > 1:
        val = stratified_subset(train_y, val_fraction, seed)
        fit = torch.ones(len(train_y), dtype=torch.bool)
        fit[val] = False
        fit_x, val_x = standardise(train_x[fit], train_x[val])
        scores, fits, linear = {}, {}, None
        for decay in candidates:  # strongest decay first, each fit warm-starts the next
            linear = fit_logistic(fit_x, train_y[fit], num_classes, decay, max_iter, linear,
                                  SEARCH_LOOSENESS * tolerance)
            fits[decay] = linear
            scores[decay] = topk_accuracy(linear(val_x), train_y[val], 1)
            metrics[f"linear_val_top1_wd{decay:g}"] = scores[decay]
        chosen = max(candidates, key=lambda decay: scores[decay])  # first max: larger decay
        metrics["linear_val_top1"] = scores[chosen]
        init = fits[chosen]
    else:
        chosen = candidates[0]
    x, test_x = standardise(train_x, test_x)
    linear = fit_logistic(x, train_y, num_classes, chosen, max_iter, init, tolerance)
    test_scores = linear(test_x)
    metrics.update(linear_top1=topk_accuracy(test_scores, test_y, 1),
                   linear_top5=topk_accuracy(test_scores, test_y, 5),
                   linear_train_top1=topk_accuracy(linear(x), train_y, 1),
                   linear_weight_decay=chosen, linear_tolerance=tolerance)
    return metrics


def majority_knn_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                       test_y: torch.Tensor, k: int = 5) -> float:
    """Top-1 of plain majority-vote cosine kNN (the DSA code's 5-NN); ties go to the
    class of the nearer neighbour."""
    train_y, test_y, num_classes = contiguous_labels(train_y, test_y)
    _, index = neighbours(train_x, test_x, k)
    neighbour_y = train_y[index]  # [Q, k], nearest first
    counts = torch.zeros(len(test_y), num_classes, dtype=torch.int64)
    counts.scatter_add_(1, neighbour_y, torch.ones_like(neighbour_y))
    tied = counts == counts.max(dim=1, keepdim=True).values  # [Q, C]
    # the first neighbour (nearest) whose class is among the most voted
    first = tied.gather(1, neighbour_y).int().argmax(dim=1)
    predicted = neighbour_y.gather(1, first[:, None]).squeeze(1)
    return (predicted == test_y).double().mean().item()


def evaluate_probes(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                    test_y: torch.Tensor, cfg) -> dict[str, float]:
    """Every probe of `cfg` (an EvaluateConfig): linear with its settings, kNN at each k,
    majority kNN, and the linear probe again on each low-shot fraction of the labels."""
    linear = cfg.linear
    metrics = linear_probe(train_x, train_y, test_x, test_y, linear.weight_decays,
                           linear.val_fraction, linear.max_iter, linear.seed, linear.tolerance)
    metrics.update(linear_max_iter=linear.max_iter, linear_val_fraction=linear.val_fraction)
    for k in cfg.knn.ks:
        metrics[f"knn{k}_top1"] = knn_probe(train_x, train_y, test_x, test_y, k,
                                            cfg.knn.temperature)
    metrics["knn_temperature"] = cfg.knn.temperature
    metrics[f"majority{cfg.knn.majority_k}nn_top1"] = majority_knn_probe(
        train_x, train_y, test_x, test_y, cfg.knn.majority_k)
    for fraction in cfg.low_shot.fractions:
        chosen = stratified_subset(train_y, fraction, cfg.low_shot.seed)
        # too few labels to carve a validation split: reuse the full-label decay
        shot = linear_probe(train_x[chosen], train_y[chosen], test_x, test_y,
                            (metrics["linear_weight_decay"],), max_iter=linear.max_iter,
                            tolerance=linear.tolerance)
        metrics[f"lowshot{percent(fraction)}_top1"] = shot["linear_top1"]
        metrics[f"lowshot{percent(fraction)}_labels"] = len(chosen)
    metrics.update(train_size=len(train_y), test_size=len(test_y),
                   num_classes=len(np.unique(train_y.numpy())))
    return metrics


def probe_cached(train_path, test_path, cfg) -> dict[str, float]:
    """`evaluate_probes` on two feature files cached by the features stage."""
    train_x, train_y = load_features(train_path)
    test_x, test_y = load_features(test_path)
    return evaluate_probes(train_x, train_y, test_x, test_y, cfg)

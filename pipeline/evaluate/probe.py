"""Probes of frozen features: linear (logistic regression), kNN, low-shot.

Every probe takes features [N, D] and integer labels [N] (any class ids, e.g. held-out
digits 7-9) and returns plain floats, so stages can write them straight into metrics JSON.
They compute on the evaluation device (the GPU when there is one) with memory bounded by
fixed blocks, whatever N: kNN keeps a running top-k over chunks of the bank, and the linear
probe leaves full-batch L-BFGS for mini-batches when its working set exceeds a budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.classify import (
    contiguous_labels,
    fit_logistic,
    nearest_neighbours,
    resident,
    standardise,
    topk_accuracy,
    weighted_knn_top1,
)
from pipeline.device import evaluation_device
from pipeline.evaluate.features import load_features
from pipeline.metrics.probe import percent
from pipeline.params.evaluation import MinibatchProbeConfig

# The validation search only ranks the weight decays, which a 10x looser tolerance already
# does (5x faster); the chosen decay is then refitted at the full tolerance.
SEARCH_LOOSENESS = 10.0

# The mini-batch probe visits the training rows in strided blocks of about BLOCK_ROWS rows
# (each block a uniform sample of the split, however the rows are ordered) and evaluates in
# chunks of as many; a float32 block of 2048-d features is 512 MiB.
BLOCK_ROWS = 65_536


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


def full_batch_bytes(rows: int, dim: int, num_classes: int) -> int:
    """Working set of full-batch L-BFGS: standardised features, logits and their gradient
    (float32)."""
    return 4 * rows * (dim + 2 * num_classes)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, weight_decays: Sequence[float] = (1e-4,),
                 val_fraction: float = 0.1, max_iter: int = 300, seed: int = 0,
                 tolerance: float = 1e-4, full_batch_gib: float = 4.0,
                 minibatch: MinibatchProbeConfig | None = None,
                 device: torch.device | None = None) -> dict[str, float]:
    """Logistic-regression probe with its weight decay chosen on a validation split.

    The validation split is a seeded, stratified `val_fraction` of the training features;
    each candidate weight decay is fitted on the rest and scored there (ties go to the
    larger, smoother decay); the winner is refitted on the whole training split
    (warm-started from its validation fit) and tested. With a single candidate no split is
    carved. Full-batch L-BFGS (`fit_logistic`) while `full_batch_bytes` fits
    `full_batch_gib`, mini-batch Adam (`fit_minibatch`, settings `minibatch`, default
    `MinibatchProbeConfig()`) above it, on `device` (default: `evaluation_device()`).
    Returns top-1/top-5 on test, the train top-1 (to spot under-fitting) and the chosen
    settings.
    """
    train_y, test_y, num_classes = contiguous_labels(train_y, test_y)
    minibatch = MinibatchProbeConfig() if minibatch is None else minibatch
    candidates = sorted(set(weight_decays), reverse=True)
    device = evaluation_device() if device is None else torch.device(device)
    if full_batch_bytes(len(train_y), train_x.shape[1], num_classes) <= full_batch_gib * 2**30:
        metrics = _full_batch_probe(train_x.to(device), train_y.to(device), test_x.to(device),
                                    test_y.to(device), num_classes, candidates, val_fraction,
                                    max_iter, seed, tolerance)
        metrics.update(linear_tolerance=tolerance, linear_solver="lbfgs")
        return metrics
    metrics = _minibatch_probe(resident(train_x, device), train_y, test_x, test_y,
                               num_classes, candidates, val_fraction, seed, minibatch, device)
    metrics.update(linear_solver="minibatch", linear_epochs=minibatch.epochs,
                   linear_batch_size=minibatch.batch_size, linear_lr=minibatch.lr)
    return metrics


def _full_batch_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                      test_y: torch.Tensor, num_classes: int, candidates: list[float],
                      val_fraction: float, max_iter: int, seed: int, tolerance: float
                      ) -> dict[str, float]:
    """`linear_probe` by full-batch L-BFGS, on the device of the tensors: the search at a
    looser tolerance, the refit at `tolerance`."""
    metrics: dict[str, float] = {}
    init = None
    if len(candidates) > 1:
        val = stratified_subset(train_y.cpu(), val_fraction, seed).to(train_y.device)
        fit = torch.ones(len(train_y), dtype=torch.bool, device=train_y.device)
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
                   linear_weight_decay=chosen)
    return metrics


class Standardiser:
    """Per-dimension mean and (unbiased) std of rows `rows` of x, computed in float64 over
    chunks (two passes), applied chunk by chunk on the device."""

    def __init__(self, x: torch.Tensor, rows: torch.Tensor, device: torch.device):
        total = torch.zeros(x.shape[1], dtype=torch.float64, device=device)
        for chunk in _chunks(x, rows, device):
            total += chunk.sum(dim=0, dtype=torch.float64)
        mean = total / len(rows)
        squares = torch.zeros_like(total)
        for chunk in _chunks(x, rows, device):
            squares += (chunk.double() - mean).pow(2).sum(dim=0)
        std = (squares / max(len(rows) - 1, 1)).sqrt().clamp(min=1e-6)
        self.mean, self.std = mean.float(), std.float()

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        return (chunk - self.mean) / self.std


def _chunks(x: torch.Tensor, rows: torch.Tensor, device: torch.device, size: int = BLOCK_ROWS):
    """Rows `rows` of x, in order, `size` at a time, as float32 on `device`."""
    for start in range(0, len(rows), size):
        yield x[rows[start:start + size].to(x.device)].to(device, non_blocking=True).float()


def _topk_hits(linear: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor,
               rows: torch.Tensor | None, standardise: Standardiser, ks: Sequence[int],
               device: torch.device) -> list[float]:
    """Top-k accuracy of `linear` on rows `rows` of x (default: all) at each k, chunk by
    chunk."""
    rows = torch.arange(len(y)) if rows is None else rows
    hits = [0.0] * len(ks)
    with torch.no_grad():
        for start in range(0, len(rows), BLOCK_ROWS):
            chunk_rows = rows[start:start + BLOCK_ROWS]
            scores = linear(standardise(next(_chunks(x, chunk_rows, device))))
            labels = y[chunk_rows].to(device)
            for i, k in enumerate(ks):
                hits[i] += topk_accuracy(scores, labels, k) * len(chunk_rows)
    return [h / max(len(rows), 1) for h in hits]


def fit_minibatch(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, num_classes: int,
                  weight_decays: Sequence[float], standardise: Standardiser,
                  cfg: MinibatchProbeConfig, seed: int, device: torch.device,
                  init: torch.nn.Linear | None = None) -> list[torch.nn.Linear]:
    """One logistic regression per weight decay on rows `rows` of x, all trained together.

    The same objective as `fit_logistic` (mean cross-entropy + decay / 2 ||W||^2), by Adam
    with a per-step cosine decay of `cfg.lr` to 0 over `cfg.epochs`. The heads share each
    mini-batch: one [B, D] x [D, K*C] product, so a sweep costs one pass over the data.
    Each epoch visits strided blocks of the rows (rows[b::blocks], each a uniform sample
    whatever the rows' order, read with sequential access) in a seeded order and shuffles
    each block on the device; memory is one block, whatever N. `init` warm-starts every
    head. Deterministic for a seed on a given device.
    """
    heads, dim = len(weight_decays), x.shape[1]
    weight = torch.zeros(heads * num_classes, dim, device=device)
    bias = torch.zeros(heads * num_classes, device=device)
    if init is not None:
        weight.copy_(init.weight.repeat(heads, 1))
        bias.copy_(init.bias.repeat(heads))
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    decays = torch.tensor(weight_decays, device=device)[:, None, None]
    optimizer = torch.optim.Adam([weight, bias], lr=cfg.lr)
    blocks = max(1, math.ceil(len(rows) / BLOCK_ROWS))
    steps_per_epoch = sum(math.ceil(len(rows[b::blocks]) / cfg.batch_size)
                          for b in range(blocks))
    total, step = cfg.epochs * steps_per_epoch, 0
    generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for _ in range(cfg.epochs):
            for block in torch.randperm(blocks, generator=generator).tolist():
                block_rows = rows[block::blocks]
                block_x = standardise(next(_chunks(x, block_rows, device, len(block_rows))))
                block_y = y[block_rows].to(device)
                order = torch.randperm(len(block_rows), generator=generator).to(device)
                for batch in order.split(cfg.batch_size):
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
                    logits = (block_x[batch] @ weight.T + bias).view(len(batch), heads, -1)
                    targets = block_y[batch, None].expand(-1, heads)
                    loss = heads * F.cross_entropy(logits.transpose(1, 2), targets) + 0.5 * (
                        decays * weight.view(heads, num_classes, dim).pow(2)).sum()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
    fitted = []
    for head in range(heads):
        linear = torch.nn.Linear(dim, num_classes, device=device).requires_grad_(False)
        linear.weight.copy_(weight.detach()[head * num_classes:(head + 1) * num_classes])
        linear.bias.copy_(bias.detach()[head * num_classes:(head + 1) * num_classes])
        fitted.append(linear)
    return fitted


def _minibatch_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor, num_classes: int, candidates: list[float],
                     val_fraction: float, seed: int, cfg: MinibatchProbeConfig,
                     device: torch.device) -> dict[str, float]:
    """`linear_probe` by `fit_minibatch`: the same protocol as `_full_batch_probe`, with
    every candidate trained in one sweep, and no copy of the features beyond one block."""
    metrics: dict[str, float] = {}
    everything = torch.arange(len(train_y))
    init = None
    if len(candidates) > 1:
        val = stratified_subset(train_y, val_fraction, seed)
        fit = torch.ones(len(train_y), dtype=torch.bool)
        fit[val] = False
        fit_rows = everything[fit]
        standardise = Standardiser(train_x, fit_rows, device)
        fits = fit_minibatch(train_x, train_y, fit_rows, num_classes, candidates, standardise,
                             cfg, seed, device)
        scores = {}
        for decay, linear in zip(candidates, fits, strict=True):
            scores[decay] = _topk_hits(linear, train_x, train_y, val, standardise, (1,),
                                       device)[0]
            metrics[f"linear_val_top1_wd{decay:g}"] = scores[decay]
        chosen = max(candidates, key=lambda decay: scores[decay])  # first max: larger decay
        metrics["linear_val_top1"] = scores[chosen]
        init = fits[candidates.index(chosen)]
    else:
        chosen = candidates[0]
    standardise = Standardiser(train_x, everything, device)
    linear = fit_minibatch(train_x, train_y, everything, num_classes, [chosen], standardise,
                           cfg, seed, device, init)[0]
    top1, top5 = _topk_hits(linear, test_x, test_y, None, standardise, (1, 5), device)
    metrics.update(linear_top1=top1, linear_top5=top5, linear_weight_decay=chosen,
                   linear_train_top1=_topk_hits(linear, train_x, train_y, None, standardise,
                                                (1,), device)[0])
    return metrics


def majority_knn_top1(neighbours: tuple[torch.Tensor, torch.Tensor], train_y: torch.Tensor,
                      test_y: torch.Tensor, num_classes: int, k: int) -> float:
    """Top-1 of a plain majority vote of the first k of `nearest_neighbours`; ties go to
    the class of the nearer neighbour."""
    neighbour_y = train_y[neighbours[1][:, :k]]  # [Q, k], nearest first
    counts = torch.zeros(len(test_y), num_classes, dtype=torch.int64)
    counts.scatter_add_(1, neighbour_y, torch.ones_like(neighbour_y))
    tied = counts == counts.max(dim=1, keepdim=True).values  # [Q, C]
    # the first neighbour (nearest) whose class is among the most voted
    first = tied.gather(1, neighbour_y).int().argmax(dim=1)
    predicted = neighbour_y.gather(1, first[:, None]).squeeze(1)
    return (predicted == test_y).double().mean().item()


def majority_knn_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                       test_y: torch.Tensor, k: int = 5) -> float:
    """Top-1 of plain majority-vote cosine kNN (the DSA code's 5-NN); ties go to the
    class of the nearer neighbour."""
    train_y, test_y, num_classes = contiguous_labels(train_y, test_y)
    return majority_knn_top1(nearest_neighbours(train_x, test_x, k), train_y, test_y,
                             num_classes, k)


def evaluate_probes(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                    test_y: torch.Tensor, cfg) -> dict[str, float]:
    """Every probe of `cfg` (an EvaluateConfig): linear with its settings, kNN at each k and
    majority kNN (one neighbour search at the largest k), and the linear probe again on
    each low-shot fraction of the labels."""
    linear = cfg.linear
    settings = dict(max_iter=linear.max_iter, tolerance=linear.tolerance,
                    full_batch_gib=linear.full_batch_gib, minibatch=linear.minibatch)
    metrics = linear_probe(train_x, train_y, test_x, test_y, linear.weight_decays,
                           linear.val_fraction, seed=linear.seed, **settings)
    metrics.update(linear_max_iter=linear.max_iter, linear_val_fraction=linear.val_fraction)
    labels_train, labels_test, num_classes = contiguous_labels(train_y, test_y)
    neighbours = nearest_neighbours(train_x, test_x, max(*cfg.knn.ks, cfg.knn.majority_k))
    for k in cfg.knn.ks:
        metrics[f"knn{k}_top1"] = weighted_knn_top1(neighbours, labels_train, labels_test,
                                                    num_classes, k, cfg.knn.temperature)
    metrics["knn_temperature"] = cfg.knn.temperature
    metrics[f"majority{cfg.knn.majority_k}nn_top1"] = majority_knn_top1(
        neighbours, labels_train, labels_test, num_classes, cfg.knn.majority_k)
    for fraction in cfg.low_shot.fractions:
        chosen = stratified_subset(train_y, fraction, cfg.low_shot.seed)
        # too few labels to carve a validation split: reuse the full-label decay
        shot = linear_probe(train_x[chosen], train_y[chosen], test_x, test_y,
                            (metrics["linear_weight_decay"],), **settings)
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

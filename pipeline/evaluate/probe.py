"""Linear and kNN probes on frozen features."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _contiguous_labels(train_y: torch.Tensor, test_y: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Map arbitrary class ids (e.g. held-out digits 7-9) onto 0..C-1."""
    classes = torch.unique(torch.cat([train_y, test_y]))
    lookup = {int(c): i for i, c in enumerate(classes)}
    remap = lambda y: torch.tensor([lookup[int(v)] for v in y], dtype=torch.int64)  # noqa: E731
    return remap(train_y), remap(test_y), len(classes)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, weight_decay: float = 1e-4, max_iter: int = 300
                 ) -> dict[str, float]:
    """Multinomial logistic regression, full-batch L-BFGS on standardised features.

    Returns top-1 accuracy on the test features (and the train accuracy, to spot
    under-fitting).
    """
    train_y, test_y, num_classes = _contiguous_labels(train_y, test_y)
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp(min=1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    linear = torch.nn.Linear(train_x.shape[1], num_classes, dtype=torch.float64)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    x, y = train_x.double(), train_y
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), y) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        train_accuracy = (linear(x).argmax(1) == y).double().mean().item()
        test_accuracy = (linear(test_x.double()).argmax(1) == test_y).double().mean().item()
    return {"linear_top1": test_accuracy, "linear_train_top1": train_accuracy}


def knn_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
              test_y: torch.Tensor, k: int = 20, temperature: float = 0.07) -> float:
    """Cosine-similarity kNN with exp(sim / T)-weighted votes (the standard SSL protocol)."""
    train_y, test_y, num_classes = _contiguous_labels(train_y, test_y)
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    k = min(k, len(train_y))
    correct = 0
    for start in range(0, len(test_y), 1024):
        similarity = test_x[start:start + 1024] @ train_x.T
        top_similarity, top_index = similarity.topk(k, dim=1)
        weights = (top_similarity / temperature).exp()
        votes = torch.zeros(len(top_index), num_classes)
        votes.scatter_add_(1, train_y[top_index], weights)
        correct += (votes.argmax(1) == test_y[start:start + 1024]).sum().item()
    return correct / max(1, len(test_y))

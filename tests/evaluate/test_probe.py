import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from pipeline.evaluate.probe import knn_probe, linear_probe


def blobs(n_per_class=60, classes=4, dim=10, spread=1.5, seed=0):
    """Gaussian clusters around fixed centres; `seed` draws the samples only."""
    centres = np.random.default_rng(123).normal(size=(classes, dim)) * 2
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + rng.normal(scale=spread, size=(n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(classes), n_per_class) + 5  # non-contiguous ids, like held-out digits
    order = rng.permutation(len(y))
    return torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order])


def test_linear_probe_matches_scikit_learn():
    train_x, train_y = blobs(seed=0)
    test_x, test_y = blobs(seed=1)
    ours = linear_probe(train_x, train_y, test_x, test_y, weight_decay=1e-2)["linear_top1"]
    mean, std = train_x.mean(0), train_x.std(0)
    reference = LogisticRegression(C=1 / (1e-2 * len(train_y)), max_iter=5000).fit(
        ((train_x - mean) / std).numpy(), train_y.numpy())
    expected = reference.score(((test_x - mean) / std).numpy(), test_y.numpy())
    assert 0.5 < ours < 1.0  # a non-trivial problem
    assert abs(ours - expected) <= 0.01


def test_knn_probe_separates_clusters_and_is_at_chance_on_noise():
    train_x, train_y = blobs(spread=0.1)
    test_x, test_y = blobs(spread=0.1, seed=1)
    assert knn_probe(train_x, train_y, test_x, test_y, k=5) == 1.0
    noise = torch.randn(400, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(400) % 4
    accuracy = knn_probe(noise[:200], labels[:200], noise[200:], labels[200:], k=20)
    assert accuracy < 0.45

"""Figures: the 2-D map of features coloured by class, cosine-similarity histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io import atomic_path


def embed_2d(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """2-D coordinates of `features` for plotting (t-SNE or PCA)."""
    if method == "pca" or len(features) < 10:
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(features)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(features) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed
                ).fit_transform(features)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_map(coordinates: np.ndarray, labels: np.ndarray, class_names: list[str], title: str,
             path: str | Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for index, label in enumerate(np.unique(labels)):
        chosen = labels == label
        name = class_names[label] if label < len(class_names) else str(label)
        ax.scatter(coordinates[chosen, 0], coordinates[chosen, 1], s=6,
                   color=cmap(index % cmap.N), label=name)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=8, loc="best", frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def save_similarity_histograms(same: np.ndarray, different: np.ndarray, title: str,
                               path: str | Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    bins = np.linspace(-1, 1, 81)
    ax.hist(different, bins=bins, density=True, alpha=0.6, label="different class")
    ax.hist(same, bins=bins, density=True, alpha=0.6, label="same class")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

"""The features stage's cache: one split's frozen features and labels per file, written
once (`save_features`) and read by the probe, transfer and geometry stages
(`load_features`). Extraction itself is pipeline/nets/extract.py's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import UserError
from pipeline.io import load_torch_file


def save_features(path, features: torch.Tensor, labels: torch.Tensor) -> None:
    """Cache one split's features and labels (plain tensors: loadable with weights_only)."""
    torch.save({"features": features.contiguous(), "labels": labels.contiguous()}, path)


def load_features(path) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels cached by `save_features`; a missing or foreign file is named."""
    path = Path(path)
    cached = load_torch_file(path, "cached features missing; run the features stage first")
    features = cached.get("features") if isinstance(cached, dict) else None
    labels = cached.get("labels") if isinstance(cached, dict) else None
    if not (isinstance(features, torch.Tensor) and isinstance(labels, torch.Tensor)):
        raise UserError(f"{path}: not a features file (no 'features' and 'labels' tensors)")
    if features.ndim != 2 or len(features) != len(labels):
        raise UserError(f"{path}: features {tuple(features.shape)} do not match "
                        f"{len(labels)} labels")
    return features, labels

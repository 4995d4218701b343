"""Where evaluation computes: feature extraction, the probes and fine-tuning alike."""

from __future__ import annotations

import torch


def evaluation_device() -> torch.device:
    """Where evaluation computes: the GPU when there is one (extracting ImageNet's features
    on CPU is not an option), the CPU otherwise."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")

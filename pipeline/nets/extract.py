"""Features of a frozen encoder, in eval mode, on the device evaluation computes on.

Pretraining's online monitor and the evaluation stages both extract features this way.
"""

from __future__ import annotations

import torch

from pipeline.nets.backbones import Encoder


def evaluation_device() -> torch.device:
    """Where evaluation computes: the GPU when there is one (extracting ImageNet's features
    on CPU is not an option), the CPU otherwise."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@torch.no_grad()
def extract_features(encoder: Encoder, images: torch.Tensor, batch_size: int = 512,
                     device: str | torch.device | None = None) -> torch.Tensor:
    """Features [N, D] (float32, on CPU) of images [N, C, H, W], in eval mode, computed on
    `device` (default: `evaluation_device()`; the encoder is moved there).

    Images are uint8 (0..255) or float in [0, 1].
    """
    device = evaluation_device() if device is None else device
    encoder = encoder.to(device).eval()
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    chunks = [encoder(batch.to(device).float() / scale).float().cpu()
              for batch in images.split(batch_size)]
    if not chunks:
        return torch.empty(0, encoder.feature_dim)
    return torch.cat(chunks)

"""Backbones and the exported `Encoder` (input normalisation + backbone).

The encoder file is self-describing: it stores the backbone params and normalisation with
the weights, so evaluation stages rebuild it without reading the run's params.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

from pipeline.errors import UserError, one_line
from pipeline.io import load_torch_file
from pipeline.params.methods import Backbone, ResNetBackbone, SmallCNNBackbone

ENCODER_FORMAT = 1


def _conv_block(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    normalisation = (nn.BatchNorm2d(out_channels) if norm == "batch"
                     else nn.GroupNorm(min(8, out_channels), out_channels))
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         normalisation, nn.ReLU(inplace=True))


def small_cnn(cfg: SmallCNNBackbone, in_channels: int) -> tuple[nn.Module, int]:
    """conv-conv-pool-conv-pool-conv, global average pool: 4*width features."""
    w, norm = cfg.width, cfg.norm
    net = nn.Sequential(
        _conv_block(in_channels, w, norm), _conv_block(w, 2 * w, norm), nn.MaxPool2d(2),
        _conv_block(2 * w, 4 * w, norm), nn.MaxPool2d(2), _conv_block(4 * w, 4 * w, norm),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return net, 4 * w


def resnet(cfg: ResNetBackbone, in_channels: int) -> tuple[nn.Module, int]:
    import torchvision  # imported here: it costs every stage process ~2 s of start-up

    net = getattr(torchvision.models, cfg.name)(weights=None)
    if cfg.cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


def build_backbone(cfg: Backbone, in_channels: int) -> tuple[nn.Module, int]:
    if isinstance(cfg, SmallCNNBackbone):
        return small_cnn(cfg, in_channels)
    return resnet(cfg, in_channels)


class Encoder(nn.Module):
    """Images in [0, 1] -> features [B, feature_dim]; normalisation is part of the model."""

    def __init__(self, cfg: Backbone, in_channels: int, mean: list[float], std: list[float]):
        super().__init__()
        self.cfg = cfg
        self.in_channels = in_channels
        self.backbone, self.feature_dim = build_backbone(cfg, in_channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone((images - self.mean) / self.std.clamp(min=1e-6))

    def export(self) -> dict[str, Any]:
        """A dict of tensors and plain values that `torch.load(weights_only=True)` reads."""
        return {
            "format": ENCODER_FORMAT,
            "backbone": self.cfg.model_dump(mode="json"),
            "in_channels": self.in_channels,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }


def save_encoder(encoder: Encoder, path: str | Path) -> None:
    torch.save(encoder.export(), path)


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> Encoder:
    """Rebuild an exported encoder; any problem is a UserError naming the file."""
    path = Path(path)
    blob = load_torch_file(path, "encoder not found; run the pretrain stage first",
                           map_location)
    if not isinstance(blob, dict) or blob.get("format") != ENCODER_FORMAT:
        raise UserError(f"{path}: not an encoder exported by this pipeline")
    try:
        cfg = TypeAdapter(Backbone).validate_python(blob["backbone"])
        encoder = Encoder(cfg, blob["in_channels"], blob["mean"], blob["std"])
        encoder.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValidationError, RuntimeError) as exc:
        raise UserError(f"{path}: encoder does not match its stored architecture "
                        f"({one_line(str(exc))[:300]})") from None
    return encoder

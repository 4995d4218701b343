"""Evaluation computes on the GPU when there is one and on the CPU otherwise."""

from __future__ import annotations

import torch

from pipeline.device import evaluation_device
from pipeline.nets.backbones import Encoder
from pipeline.nets.extract import extract_features
from pipeline.params.methods import SmallCNNBackbone


def test_evaluation_device_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert evaluation_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert evaluation_device().type == "cuda"


def test_features_default_to_the_evaluation_device():
    torch.manual_seed(0)
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])
    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    default = extract_features(encoder, images, batch_size=4)
    assert default.device.type == "cpu"  # features come back to the CPU either way
    assert not default.requires_grad
    assert next(encoder.parameters()).device.type == evaluation_device().type
    torch.testing.assert_close(default, extract_features(encoder, images, 4, "cpu"))

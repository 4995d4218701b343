"""Supervised baseline: cross-entropy on labels, same backbone, views and schedule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.methods.base import Method, Step
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import SupervisedMethod


class Supervised(Method):
    uses_labels = True

    def __init__(self, encoder: Encoder, cfg: SupervisedMethod, num_classes: int):
        super().__init__(encoder)
        self.classifier = nn.Linear(encoder.feature_dim, num_classes)
        self.label_smoothing = cfg.label_smoothing

    @classmethod
    def from_config(cls, cfg, encoder, num_classes):
        return cls(encoder, cfg, num_classes)

    def step(self, view1, view2, labels) -> Step:
        h1, h2 = self.encode_views(view1, view2)
        logits = self.classifier(torch.cat([h1, h2]))
        targets = torch.cat([labels, labels])
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return Step({"loss": loss, "train_accuracy": accuracy.detach()})

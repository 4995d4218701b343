"""The shared base of every method: an encoder plus what the method trains on top of it.

A method's `forward` is its training step, so that DDP's wrapper sees every forward pass
and synchronises gradients. Subclasses implement `step`, which returns the base losses and
the embeddings; `forward` adds the optional `Regulator` on top, so any embedding method
composes with any regulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from pipeline.nets.backbones import Encoder
from pipeline.nets.heads import ProjectionHead


def encode_batches(network: nn.Module, *images: torch.Tensor) -> list[torch.Tensor]:
    """`network` applied to each batch, with one pass per distinct image size.

    Same-size batches share a pass (one BN batch, one kernel launch); batches of different
    sizes (`views.multi_resolution`) cannot be concatenated, so they get a pass each.
    """
    groups: dict[torch.Size, list[int]] = {}
    for index, batch in enumerate(images):
        groups.setdefault(batch.shape[1:], []).append(index)
    features: list[torch.Tensor | None] = [None] * len(images)
    for indices in groups.values():
        outputs = network(torch.cat([images[i] for i in indices]))
        sizes = [images[i].shape[0] for i in indices]
        for i, output in zip(indices, outputs.split(sizes), strict=True):
            features[i] = output
    return features


@dataclass
class Step:
    """What one training step produced.

    `outputs` holds the scalar `loss` and anything worth logging; `z1`, `z2` are the
    projected embeddings of the two views (what a regulator shapes); `target1`, `target2`
    are the EMA target encoder's features of the views, when the method has a target.
    """

    outputs: dict[str, torch.Tensor]
    z1: torch.Tensor | None = None
    z2: torch.Tensor | None = None
    target1: torch.Tensor | None = None
    target2: torch.Tensor | None = None


class Regulator(nn.Module):
    """An extra loss over any embedding method's step, in three parts per training step:
    prior features (gradient-free), a loss over the step's embeddings, and an update after
    the optimizer step (an EMA prior, say)."""

    def prior_features(self, method: Method, view1: torch.Tensor, view2: torch.Tensor,
                       original: torch.Tensor | None) -> Any:
        """Whatever `loss` needs from fixed networks; runs before the method's step."""
        raise NotImplementedError

    def loss(self, step: Step, priors: Any) -> dict[str, torch.Tensor]:
        """The regulator's `loss` (added to the method's) and diagnostics to log."""
        raise NotImplementedError

    def after_optimizer_step(self, method: Method, step: int, total_steps: int) -> None:
        """Updates outside the gradient; `step` counts from 1."""


class Method(nn.Module):
    uses_labels: ClassVar[bool] = False
    embedding_dim: int = 0  # size of z1/z2, set by methods a regulator can act on

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder
        self.regulator: Regulator | None = None

    @classmethod
    def from_config(cls, cfg, encoder: Encoder, num_classes: int) -> Method:
        """Build from the run's `method` params; override when more is needed."""
        return cls(encoder, cfg)

    @property
    def target_encoder(self) -> Encoder | None:
        """The EMA copy of the encoder, for methods that keep one."""
        return None

    def step(self, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor) -> Step:
        raise NotImplementedError

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor,
                original: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The training step; `original` (the un-augmented float batch) feeds the regulator.

        The regulator's gradient-free prior pass goes first, while the online pass's
        activations are not yet held in memory. With a regulator, `loss` is the sum and
        `base_loss` the method's own loss.
        """
        if self.regulator is None:
            return self.step(view1, view2, labels).outputs
        priors = self.regulator.prior_features(self, view1, view2, original)
        step = self.step(view1, view2, labels)
        terms = self.regulator.loss(step, priors)
        base = step.outputs["loss"]
        return {**step.outputs, **terms, "loss": base + terms["loss"], "base_loss": base.detach()}

    def encode_views(self, view1: torch.Tensor, view2: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of both views, in one backbone pass when they have the same size."""
        h1, h2 = encode_batches(self.encoder, view1, view2)
        return h1, h2

    @torch.no_grad()
    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Hook for updates outside the gradient (EMA targets); `step` counts from 1."""
        if self.regulator is not None:
            self.regulator.after_optimizer_step(self, step, total_steps)


class ProjectedPairMethod(Method):
    """Encoder -> projector for both views, then `criterion(z1, z2)`: SimCLR, Barlow Twins
    and VICReg differ only in their loss module."""

    criterion: nn.Module

    def __init__(self, encoder: Encoder, projector: Any):
        super().__init__(encoder)
        self.projector = ProjectionHead(encoder.feature_dim, projector.hidden_dim,
                                        projector.output_dim, projector.num_layers,
                                        projector.batch_norm)
        self.embedding_dim = projector.output_dim

    def step(self, view1, view2, labels) -> Step:
        z1, z2 = self.projector(torch.cat(self.encode_views(view1, view2))).chunk(2)
        return Step({"loss": self.criterion(z1, z2)}, z1, z2)

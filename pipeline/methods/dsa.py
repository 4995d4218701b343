"""DSA, the Dynamic Semantic Adjuster (Song et al., 2024), as a regulator of any method:
the run's prior network and `DSALoss` (pipeline/losses/dsa.py) over the method's embeddings.
"""

from __future__ import annotations

import torch

from pipeline.losses.dsa import DSALoss
from pipeline.methods.base import Method, Regulator, Step
from pipeline.methods.priors import Prior
from pipeline.params.methods import DSARegulator


class DSA(Regulator):
    """The regulator: the run's prior network and `DSALoss` over the method's embeddings."""

    def __init__(self, cfg: DSARegulator, method: Method):
        super().__init__()
        if method.embedding_dim <= 0:
            raise ValueError(f"{type(method).__name__} has no embeddings for DSA to regulate")
        self.prior = Prior(cfg, method)
        self.criterion = DSALoss(
            method.embedding_dim, lambda1=cfg.lambda1, lambda2=cfg.lambda2,
            prior_temperature=cfg.prior_temperature, temperature=cfg.temperature, k=cfg.k,
            mu=cfg.mu, relation_norm=cfg.relation_norm,
            gather_distributed=cfg.gather_distributed)

    def prior_features(self, method: Method, view1: torch.Tensor, view2: torch.Tensor,
                       original: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        if original is None:
            raise ValueError("DSA needs the un-augmented batch (`original`)")
        return self.prior(method, view1, view2, original)

    def loss(self, step: Step, priors: tuple[torch.Tensor | None, ...]
             ) -> dict[str, torch.Tensor]:
        prior1, prior2, prior0 = priors
        if prior1 is None:  # the prior is the method's target: its step computed these
            prior1, prior2 = step.target1, step.target2
        return self.criterion(step.z1, step.z2, prior1, prior2, prior0)

    def after_optimizer_step(self, method: Method, step: int, total_steps: int) -> None:
        self.prior.after_optimizer_step(method, step, total_steps)

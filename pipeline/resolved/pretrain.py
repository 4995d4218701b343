"""What `pretrain@<run>` reads: the pretraining run (no evaluation or report params) and the
seeds. Where it runs (`ray:`) and where the shards are read from (`publish`) decide no
result: the stage reads them from params.yaml (pipeline/where.py)."""

from __future__ import annotations

from pipeline.params.base import Strict
from pipeline.params.training import RunConfig


class PretrainParams(Strict):
    run: RunConfig
    seeds: list[int]

    def seeded(self, seed: int) -> RunConfig:
        """The run's config for one of its seeds."""
        return self.run.model_copy(update={"seed": seed})

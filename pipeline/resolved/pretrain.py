"""What `pretrain@<run>` reads: the pretraining run (no evaluation or report params), the
seeds, and the number of ranks (`ray.num_workers`), which decides what each rank trains on.
The rest of where it runs (`ray:`) and where the shards are read from (`publish`) decide no
result: the stage reads them from params.yaml (pipeline/where.py, pipeline/located.py)."""

from __future__ import annotations

from pipeline.params.base import PositiveInt, Strict
from pipeline.params.training import RunConfig


class PretrainParams(Strict):
    run: RunConfig
    seeds: list[int]
    num_workers: PositiveInt
    """`ray.num_workers`, the ranks: each draws its views from a stream seeded by its rank,
    and streamed, each reads the shards of its readers (ranks x `data.workers`), so another
    count trains another encoder; declared here so that changing it reruns pretrain@."""

    def seeded(self, seed: int) -> RunConfig:
        """The run's config for one of its seeds."""
        return self.run.model_copy(update={"seed": seed})

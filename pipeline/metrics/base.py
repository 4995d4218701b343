"""What every stage's metrics share: the per-seed file layout, writing and reading it.

A stage writes two files: its results (results/<stage>/<run>.json, every number, per
seed: `write_seeded`, read back by the report) and, for `dvc metrics`, its headline
(metrics/<stage>/<run>.json: the few numbers a reader compares, per seed and their mean:
`write_headline`). The headline is committed, so it never holds timings.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import UserError
from pipeline.io import read_json, write_json
from pipeline.layout import seed_dir


class StageMetrics(BaseModel):
    """Base of every stage's per-seed metrics; named fields are required, and metrics
    whose names depend on params (kNN at each k, ...) are extra fields."""

    model_config = ConfigDict(extra="allow", frozen=True)


StageModel = TypeVar("StageModel", bound=BaseModel)


def seed_key(seed: int) -> str:
    """A seed's key in a metrics file (the same name as its directory in models/)."""
    return seed_dir(seed)


def write_seeded(path: str | Path, per_seed: dict[int, BaseModel | dict]) -> None:
    """Write one stage's metrics of every seed of a run (atomically): the metrics the stage
    computed, checked against its contract (optional metrics it did not compute are left
    out)."""
    write_json(path, {seed_key(seed): value.model_dump(exclude_unset=True)
                      if isinstance(value, BaseModel) else value
                      for seed, value in per_seed.items()})


MEAN = "mean"  # the headline's key for the mean over seeds


def write_headline(path: str | Path, per_seed: dict[int, dict[str, float | None]]) -> None:
    """Write a run's headline metrics (atomically): {seed_<s>: {name: value}, mean: {...}}.
    A value that is missing or NaN for a seed is left out, and out of the mean."""
    def defined(value: float | None) -> bool:
        return value is not None and not math.isnan(value)

    seeded = {seed_key(seed): {k: v for k, v in values.items() if defined(v)}
              for seed, values in per_seed.items()}
    names = dict.fromkeys(name for values in per_seed.values() for name in values)
    means = {}
    for name in names:
        values = [v[name] for v in seeded.values() if name in v]
        if values:
            means[name] = sum(values) / len(values)
    write_json(path, {**seeded, MEAN: means})


def read_seeded(path: str | Path, model: type[StageModel], seeds: list[int]
                ) -> dict[int, StageModel]:
    """Read a stage's per-seed metrics back, checking every seed the params ask for."""
    path = Path(path)
    data = read_json(path, "metrics file missing; run its stage first")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of seeds")
    out = {}
    for seed in seeds:
        if seed_key(seed) not in data:
            raise UserError(f"{path}: no metrics for seed {seed}; rerun its stage")
        try:
            out[seed] = model.model_validate(data[seed_key(seed)])
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in (seed_key(seed), *error["loc"]))
            raise UserError(f"{path}: {where}: {error['msg'].lower()}") from None
    return out

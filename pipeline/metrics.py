"""The metrics each stage writes, as typed contracts between the stages and the report.

A stage of run `r` writes `metrics/<stage>/r.json`, one entry per seed of the run
(`{"seed_0": {...}, "seed_1": {...}}`, which `dvc metrics show/diff` read as nested
keys). The report reads them back through these models, so a missing or malformed
metric is an error naming the file, never an empty column. Metric names that depend on
params (kNN at each `evaluate.knn.ks`, low-shot at each fraction) come from
`probe_metric_names`, which the probe and the report share.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import UserError
from pipeline.io import write_json
from pipeline.params import EvaluateConfig


class StageMetrics(BaseModel):
    """Base of every stage's per-seed metrics; named fields are required, and metrics
    whose names depend on params (kNN at each k, ...) are extra fields."""

    model_config = ConfigDict(extra="allow", frozen=True)


class PretrainMetrics(StageMetrics):
    epochs: int
    final_loss: float | None
    train_seconds: float
    monitor_seconds: float
    images_per_second: float | None


class ProbeMetrics(StageMetrics):
    """Linear probe (weight decay chosen on a validation split), kNN, low-shot."""

    linear_top1: float
    linear_top5: float
    linear_weight_decay: float
    train_size: int
    test_size: int
    num_classes: int


class GeometryMetrics(StageMetrics):
    """Class separation and crowding of the test features, and label-free monitors."""

    intra_class_variance: float
    inter_class_distance: float
    min_inter_class_distance: float
    crowding_index: float
    nc1: float
    effective_rank: float
    uniformity: float
    nearest_class_mean_accuracy: float
    silhouette: float
    alignment: float
    rankme: float | None = None
    alpha_req: float | None = None  # NaN where the features span fewer than 6 directions
    feature_std: float | None = None
    lidar: float | None = None


class TransferMetrics(StageMetrics):
    """The probes on one transfer target; `finetune_top1` where the target fine-tunes."""

    linear_top1: float
    finetune_top1: float | None = None


StageModel = TypeVar("StageModel", bound=BaseModel)
STAGE_MODELS: dict[str, type[BaseModel]] = {
    "pretrain": PretrainMetrics, "probe": ProbeMetrics, "geometry": GeometryMetrics}


def seed_key(seed: int) -> str:
    return f"seed_{seed}"


def percent(fraction: float) -> str:
    """0.01 -> '1pct', 0.1 -> '10pct', 0.005 -> '0.5pct' (metric-name friendly)."""
    return f"{fraction * 100:g}pct"


def probe_metric_names(cfg: EvaluateConfig) -> list[str]:
    """The accuracy metrics a probe writes for these evaluation params, in report order."""
    return ["linear_top1", "linear_top5", *(f"knn{k}_top1" for k in cfg.knn.ks),
            f"majority{cfg.knn.majority_k}nn_top1",
            *(f"lowshot{percent(f)}_top1" for f in cfg.low_shot.fractions)]


def write_seeded(path: str | Path, per_seed: dict[int, BaseModel | dict]) -> None:
    """Write one stage's metrics of every seed of a run (atomically)."""
    write_json(path, {seed_key(seed): value.model_dump() if isinstance(value, BaseModel)
                      else value for seed, value in per_seed.items()})


def read_seeded(path: str | Path, model: type[StageModel], seeds: list[int]
                ) -> dict[int, StageModel]:
    """Read a stage's per-seed metrics back, checking every seed the params ask for."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: metrics file missing; run its stage first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
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


def read_transfer(path: str | Path, seeds: list[int]) -> dict[int, dict[str, TransferMetrics]]:
    """The transfer stage's {seed: {target: metrics}}."""
    raw = read_seeded(path, StageMetrics, seeds)
    out: dict[int, dict[str, TransferMetrics]] = {}
    for seed, targets in raw.items():
        try:
            out[seed] = {name: TransferMetrics.model_validate(values)
                         for name, values in (targets.model_extra or {}).items()}
        except ValidationError as exc:
            error = exc.errors()[0]
            raise UserError(f"{path}: {seed_key(seed)}: {error['msg'].lower()}") from None
    return out

"""What `transfer@<run>` reports per seed and target (results/transfer/<run>.json)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from pipeline.errors import UserError
from pipeline.metrics.base import StageMetrics, read_seeded, seed_key


class TransferMetrics(StageMetrics):
    """The probes on one transfer target; `finetune_top1` where the target fine-tunes."""

    linear_top1: float
    finetune_top1: float | None = None


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

"""The summary table over all runs: one row per run, key metrics as columns (polars)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import UserError

# (stage, metric key in that stage's JSON, column name in the summary)
COLUMNS: list[tuple[str, str, str]] = [
    ("probe", "linear_top1", "linear_top1"),
    ("probe", "knn_top1", "knn_top1"),
    ("transfer", "linear_top1", "transfer_linear_top1"),
    ("transfer", "knn_top1", "transfer_knn_top1"),
    ("geometry", "intra_class_variance", "intra_class_variance"),
    ("geometry", "inter_class_distance", "inter_class_distance"),
    ("geometry", "crowding_index", "crowding_index"),
    ("geometry", "alignment", "alignment"),
    ("geometry", "uniformity", "uniformity"),
    ("geometry", "effective_rank", "effective_rank"),
    ("pretrain", "final_loss", "final_loss"),
    ("pretrain", "train_seconds", "train_seconds"),
]


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: metrics file missing; run its stage first") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg})") from None


def summary_table(metrics_dir: Path, runs: dict[str, dict[str, str]]) -> pl.DataFrame:
    """`runs` maps run name -> {"method": ..., "dataset": ...}; rows follow its order."""
    rows = []
    for run_name, info in runs.items():
        row: dict[str, Any] = {"run": run_name, **info}
        loaded = {stage: _read(metrics_dir / stage / f"{run_name}.json")
                  for stage in {stage for stage, _, _ in COLUMNS}}
        for stage, key, column in COLUMNS:
            value = loaded[stage].get(key)
            row[column] = float(value) if value is not None else None
        rows.append(row)
    return pl.DataFrame(rows)


def to_markdown(table: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return "" if value is None else str(value)

    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.iter_rows()]
    return "\n".join([header, rule, *body]) + "\n"


def summary_metrics(table: pl.DataFrame) -> dict[str, dict[str, float | None]]:
    """Nested {run: {metric: value}} for `dvc metrics show`."""
    numeric = [c for c, dtype in table.schema.items() if dtype.is_numeric()]
    return {row["run"]: {c: row[c] for c in numeric} for row in table.iter_rows(named=True)}

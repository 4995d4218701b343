"""The report over all runs (polars): per-run rows, seeds aggregated, the gap closed.

Runs whose configs differ only in `seed` form one *group*; the report gives the mean and
standard deviation of every metric over a group's seeds. Each group is one *efficiency
curve* (linear accuracy against pretraining epochs): the online probe of its runs'
monitored epochs plus the final probe; groups that differ only in `train.epochs` are
separate budgets of one config, whose final points are joined too.
The SSL-to-supervised gap closed by a group is

    (acc - acc_ref) / (acc_supervised - acc_ref)

relative to its base method (the same config without `regulator`, for DSA runs) and
relative to SimCLR (the closest plain SimCLR group of the same dataset).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import UserError

STAGES = ("pretrain", "probe", "transfer", "geometry")
# metrics of each stage the report keeps (transfer: these, per target)
PROBE_KEYS = ("linear_top1", "linear_top5", "knn20_top1", "knn200_top1", "majority5nn_top1",
              "lowshot1pct_top1", "lowshot10pct_top1", "linear_weight_decay")
GEOMETRY_KEYS = ("intra_class_variance", "inter_class_distance", "min_inter_class_distance",
                 "crowding_index", "nc1", "alignment", "uniformity", "effective_rank",
                 "nearest_class_mean_accuracy", "silhouette")
PRETRAIN_KEYS = ("final_loss", "train_seconds")
TRANSFER_KEYS = ("linear_top1", "knn20_top1", "lowshot10pct_top1")
FINETUNE_KEYS = ("finetune_top1",)  # only targets that fine-tune have them
ACCURACY = "linear_top1"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: metrics file missing; run its stage first") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg})") from None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def method_label(run: Any) -> str:
    """`simclr`, or `simclr+dsa` for a run with a regulator (read getattr-safe, so runs of
    a schema without regulators work too)."""
    regulator = getattr(run, "regulator", None)
    if regulator is None:
        return run.method.name
    return f"{run.method.name}+{getattr(regulator, 'name', None) or 'regulator'}"


def _config_key(run: Any, *drop: tuple[str, ...]) -> str:
    """The run's config as JSON without the paths in `drop` (e.g. ("seed",))."""
    config = run.model_dump(mode="json")
    for path in drop:
        node = config
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    return json.dumps(config, sort_keys=True)


def run_rows(metrics_dir: Path, runs: dict[str, Any]) -> pl.DataFrame:
    """One row per run: its identity (dataset, method, seed, epochs, group keys) and every
    metric the report keeps, read from metrics/<stage>/<run>.json."""
    rows = []
    for name, run in runs.items():
        loaded = {stage: _read(metrics_dir / stage / f"{name}.json") for stage in STAGES}
        row: dict[str, Any] = {
            "run": name, "dataset": run.dataset, "method": method_label(run),
            "seed": run.seed, "epochs": run.train.epochs,
            "group_key": _config_key(run, ("seed",)),
            "curve_key": _config_key(run, ("seed",), ("train", "epochs")),
            "base_key": _config_key(run, ("seed",), ("regulator",)),
            "has_regulator": getattr(run, "regulator", None) is not None,
        }
        for key in PRETRAIN_KEYS:
            row[key] = _number(loaded["pretrain"].get(key))
        for key in PROBE_KEYS:
            row[key] = _number(loaded["probe"].get(key))
        for key in GEOMETRY_KEYS:
            row[key] = _number(loaded["geometry"].get(key))
        for target, values in sorted(loaded["transfer"].items()):
            if isinstance(values, dict):
                for key in TRANSFER_KEYS:
                    row[f"transfer_{target}_{key}"] = _number(values.get(key))
                for key in FINETUNE_KEYS:
                    if key in values:
                        row[f"transfer_{target}_{key}"] = _number(values[key])
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def metric_columns(rows: pl.DataFrame) -> list[str]:
    identity = {"seed", "epochs"}
    return [c for c, dtype in rows.schema.items()
            if dtype.is_numeric() and c not in identity]


def aggregate_seeds(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per group (runs equal up to `seed`): mean and std of every metric.

    The group is named by its first run; `std` is the sample standard deviation (null for
    a single seed, so one seed never looks like zero spread).
    """
    metrics = metric_columns(rows)
    return (
        rows.group_by("group_key", maintain_order=True)
        .agg(
            pl.col("run").first().alias("group"),
            pl.col("dataset", "method", "epochs", "curve_key", "base_key",
                   "has_regulator").first(),
            pl.len().alias("seeds"),
            *[pl.col(m).mean().alias(f"{m}_mean") for m in metrics],
            *[pl.col(m).std().alias(f"{m}_std") for m in metrics],
        )
    )


def _closest(group: dict[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The candidate of the same dataset closest in epochs (ties: first in params order)."""
    same = [c for c in candidates if c["dataset"] == group["dataset"]]
    if not same:
        return None
    return min(same, key=lambda c: abs(c["epochs"] - group["epochs"]))


def _gap(accuracy: float | None, reference: float | None, supervised: float | None
         ) -> float | None:
    if None in (accuracy, reference, supervised) or math.isclose(supervised, reference):
        return None
    return (accuracy - reference) / (supervised - reference)


def gap_closed(groups: pl.DataFrame) -> pl.DataFrame:
    """Add `gap_closed_vs_base` (regulator groups only) and `gap_closed_vs_simclr`: the
    fraction of the SSL-to-supervised gap in mean linear top-1 each group closes."""
    records = groups.to_dicts()
    supervised = [g for g in records if g["method"] == "supervised"]
    simclr = [g for g in records if g["method"] == "simclr"]
    by_config = {g["base_key"]: g for g in records if not g["has_regulator"]}
    mean = f"{ACCURACY}_mean"
    vs_base, vs_simclr = [], []
    for group in records:
        reference = _closest(group, supervised)
        top = reference[mean] if reference else None
        base = by_config.get(group["base_key"]) if group["has_regulator"] else None
        vs_base.append(_gap(group[mean], base[mean], top) if base else None)
        plain = _closest(group, simclr)
        vs_simclr.append(_gap(group[mean], plain[mean], top)
                         if plain and group["method"] not in ("supervised", "simclr")
                         else None)
    return groups.with_columns(pl.Series("gap_closed_vs_base", vs_base, dtype=pl.Float64),
                               pl.Series("gap_closed_vs_simclr", vs_simclr, dtype=pl.Float64))


def monitored_history(plots_dir: Path, runs: Iterable[str]) -> pl.DataFrame:
    """(run, epoch, linear_top1) at every epoch the online linear probe ran, read from the
    pretrain stage's history `plots/pretrain/<run>.tsv`; runs whose history has no such
    column (monitor off, or the untrained `random` control) add no rows."""
    frames = [pl.DataFrame(schema={"run": pl.String, "epoch": pl.Int64, ACCURACY: pl.Float64})]
    for name in runs:
        path = plots_dir / "pretrain" / f"{name}.tsv"
        try:
            table = pl.read_csv(path, separator="\t", infer_schema_length=None)
        except FileNotFoundError:
            raise UserError(f"{path}: pretraining history missing; run its stage first") \
                from None
        if ACCURACY in table.columns:
            frames.append(table.select(pl.lit(name).alias("run"),
                                       pl.col("epoch").cast(pl.Int64),
                                       pl.col(ACCURACY).cast(pl.Float64)).drop_nulls(ACCURACY))
    return pl.concat(frames)


def efficiency_curves(rows: pl.DataFrame, groups: pl.DataFrame, history: pl.DataFrame
                      ) -> pl.DataFrame:
    """Linear top-1 (mean, std over seeds) against pretraining epochs, one curve per group
    (runs equal up to `seed`), named `<method> (<group>)`.

    `source` tells the points apart: `online` is the monitored probe at each monitored
    epoch (one fixed weight decay; intermediate points of one run's schedule), `probe` the
    probe stage's final linear top-1 at `train.epochs` (validated weight decay).
    `budgets` names the groups that differ only in `train.epochs`: separately pretrained
    budgets, each with its own schedule, whose final points the figure joins.
    """
    mean, std = f"{ACCURACY}_mean", f"{ACCURACY}_std"
    names = groups.select(
        "group_key", "dataset", "method", "group",
        pl.format("{} ({})", pl.col("method"), pl.col("group")).alias("curve"),
        pl.format("{} ({})", pl.col("method"), pl.col("group").first().over("curve_key"))
        .alias("budgets"))
    online = (history.join(rows.select("run", "group_key"), on="run")
              .group_by("group_key", "epoch", maintain_order=True)
              .agg(pl.col(ACCURACY).mean().alias(mean), pl.col(ACCURACY).std().alias(std),
                   pl.len().alias("seeds"))
              .join(names, on="group_key")
              .with_columns(pl.lit("online").alias("source"), pl.col("epoch").alias("epochs")))
    final = groups.join(names.drop("dataset", "method", "group"), on="group_key",
                        maintain_order="left").with_columns(pl.lit("probe").alias("source"))
    columns = [pl.col("dataset", "curve", "method", "group", "source"),
               pl.col("epochs").cast(pl.Int64), pl.col(mean, std).cast(pl.Float64),
               pl.col("seeds").cast(pl.Int64), pl.col("budgets")]
    return (pl.concat([online.select(columns), final.select(columns)])
            .sort("dataset", "curve", "source", "epochs", maintain_order=True))


def efficiency_figure(curves: pl.DataFrame, dataset: str) -> Any:
    """The matplotlib figure of one dataset's curves: per curve, the online probe's points
    joined by a line and the final probe as a star in the same colour (std bars over
    seeds); dashed grey lines join the final points of separate epoch budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    mean, std = f"{ACCURACY}_mean", f"{ACCURACY}_std"
    chosen = curves.filter(pl.col("dataset") == dataset)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    finals = chosen.filter(pl.col("source") == "probe")
    joined = False
    for _, points in finals.group_by("budgets", maintain_order=True):
        if points.height > 1:
            points = points.sort("epochs")
            ax.plot(points["epochs"].to_numpy(), points[mean].to_numpy(), linestyle="--",
                    color="0.6", zorder=1)
            joined = True
    styles = {"online": {"marker": "o", "markersize": 4},
              "probe": {"marker": "*", "markersize": 12, "linestyle": "none"}}
    for index, ((curve,), points) in enumerate(chosen.group_by("curve", maintain_order=True)):
        label: str | None = curve
        for source, style in styles.items():
            part = points.filter(pl.col("source") == source)
            if part.height:
                ax.errorbar(part["epochs"].to_numpy(), part[mean].to_numpy(),
                            yerr=part[std].fill_null(0.0).to_numpy(),
                            color=colours[index % len(colours)], capsize=2, label=label,
                            **style)
                label = None
    keys = [Line2D([], [], color="black", marker="o", markersize=4,
                   label="online probe (fixed weight decay)"),
            Line2D([], [], color="black", marker="*", markersize=10, linestyle="none",
                   label="final probe")]
    if joined:
        keys.append(Line2D([], [], color="0.6", linestyle="--", label="separate epoch budgets"))
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=[*handles, *keys], frameon=False, fontsize=7, loc="lower right")
    ax.set_xlabel("pretraining epochs")
    ax.set_ylabel("linear top-1 (mean over seeds)")
    ax.set_title(f"{dataset}: learning efficiency")
    fig.tight_layout()
    return fig


def save_efficiency_figure(curves: pl.DataFrame, dataset: str, path: str | Path) -> None:
    """Write `efficiency_figure` as a PNG (atomically) and release it."""
    import matplotlib.pyplot as plt

    from pipeline.io import atomic_path

    fig = efficiency_figure(curves, dataset)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def to_markdown(table: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4f}"
        return "" if value is None else str(value)

    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.iter_rows()]
    return "\n".join([header, rule, *body]) + "\n"


def dataset_table(groups: pl.DataFrame, dataset: str) -> pl.DataFrame:
    """The groups of one dataset with every metric as `mean ± std` text."""
    chosen = groups.filter(pl.col("dataset") == dataset)
    metrics = [c.removesuffix("_mean") for c in chosen.columns if c.endswith("_mean")]
    columns = [pl.col("group"), pl.col("method"), pl.col("epochs"), pl.col("seeds")]
    for metric in metrics:
        mean, std = pl.col(f"{metric}_mean"), pl.col(f"{metric}_std")
        text = (pl.when(mean.is_null()).then(pl.lit(""))
                .when(std.is_null()).then(mean.round(4).cast(pl.String))
                .otherwise(pl.format("{} ± {}", mean.round(4), std.round(4))))
        columns.append(text.alias(metric))
    columns += [pl.col("gap_closed_vs_base").round(3), pl.col("gap_closed_vs_simclr").round(3)]
    return chosen.select(columns)


def summary_markdown(groups: pl.DataFrame) -> str:
    """One table per dataset (mean ± std over seeds), then how the gap is defined."""
    parts = ["# Summary over all runs\n",
             "Mean ± sample std over seeds of runs that differ only in `seed`. "
             "gap_closed = (acc - acc_ref) / (acc_supervised - acc_ref) in linear top-1, "
             "with ref = the base method without regulator, or SimCLR.\n"]
    for dataset in groups["dataset"].unique(maintain_order=True):
        parts.append(f"## {dataset}\n")
        parts.append(to_markdown(dataset_table(groups, dataset)))
    return "\n".join(parts)


def summary_metrics(groups: pl.DataFrame) -> dict[str, dict[str, dict[str, float | None]]]:
    """Nested {dataset: {group: {metric: value}}} for `dvc metrics show/diff`."""
    numeric = [c for c, dtype in groups.schema.items()
               if dtype.is_numeric() and c not in ("epochs",)]
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for row in groups.iter_rows(named=True):
        values = {c: row[c] for c in numeric
                  if row[c] is not None and not (isinstance(row[c], float) and math.isnan(row[c]))}
        out.setdefault(row["dataset"], {})[row["group"]] = values
    return out


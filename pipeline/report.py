"""The report over all runs and seeds (polars): tables, paired comparisons, efficiency.

- `run_rows`: one row per (run, seed), read through the typed metrics contracts; the
  columns come from params (kNN at each `evaluate.knn.ks`, ...) and the models.
- `summarise`: per run, the mean and sample std over seeds, and the SSL-to-supervised
  gap closed, (acc - acc_control) / (acc_supervised - acc_control) in linear top-1.
- `compare_runs`: every run against its dataset's control and supervised runs, and each
  `report.comparisons` pair: paired differences over seeds, an interval, a verdict.
- `efficiency`: online linear top-1 against epochs per run (mean, std, min, max over
  seeds), and the first epoch each run reaches `report.reach_fraction` of supervised.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import UserError
from pipeline.io import atomic_path
from pipeline.layout import history_path
from pipeline.metrics.base import read_seeded
from pipeline.metrics.geometry import GeometryMetrics
from pipeline.metrics.pretrain import PretrainMetrics
from pipeline.metrics.probe import ProbeMetrics, probe_metric_names
from pipeline.metrics.transfer import read_transfer
from pipeline.resolved.report import ReportParams
from pipeline.stats import compare_paired

ACCURACY = "linear_top1"
GEOMETRY_COLUMNS = tuple(GeometryMetrics.model_fields)
PRETRAIN_COLUMNS = ("final_loss", "train_seconds")
# (metric, higher is better) that comparisons report; kNN at the first `evaluate.knn.ks`
LOWER_IS_BETTER = frozenset({"crowding_index", "nc1"})


def compared_metrics(params: ReportParams) -> list[str]:
    """The metrics of the paired comparisons: linear and kNN top-1, crowding, NC1."""
    return [ACCURACY, f"knn{params.knn.ks[0]}_top1", "crowding_index", "nc1"]


def run_rows(metrics_dir: Path, params: ReportParams) -> pl.DataFrame:
    """One row per (run, seed): identity, then every metric the report keeps."""
    probe_columns = probe_metric_names(params.knn, params.low_shot)
    rows = []
    for name, run in params.runs.items():
        def read(stage: str, model: type, name: str = name) -> dict:
            return read_seeded(metrics_dir / stage / f"{name}.json", model, params.seeds)

        pretrain, probe = read("pretrain", PretrainMetrics), read("probe", ProbeMetrics)
        geometry = read("geometry", GeometryMetrics)
        transfer = read_transfer(metrics_dir / "transfer" / f"{name}.json", params.seeds)
        for seed in params.seeds:
            row: dict[str, Any] = {"run": name, "dataset": run.dataset,
                                   "method": run.method, "seed": seed,
                                   "epochs": run.epochs}
            row.update({c: getattr(pretrain[seed], c) for c in PRETRAIN_COLUMNS})
            values = probe[seed].model_dump()
            missing = [c for c in probe_columns if c not in values]
            if missing:
                raise UserError(f"{metrics_dir / 'probe' / f'{name}.json'}: no {missing[0]} "
                                "for the current evaluate params; rerun the probe stage")
            row.update({c: values[c] for c in probe_columns})
            row["test_size"] = probe[seed].test_size
            row.update({c: getattr(geometry[seed], c) for c in GEOMETRY_COLUMNS})
            for target, metrics in sorted(transfer[seed].items()):
                row[f"transfer_{target}_linear_top1"] = metrics.linear_top1
                if metrics.finetune_top1 is not None:
                    row[f"transfer_{target}_finetune_top1"] = metrics.finetune_top1
            rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def metric_columns(rows: pl.DataFrame) -> list[str]:
    return [c for c, dtype in rows.schema.items()
            if dtype.is_numeric() and c not in ("seed", "epochs", "test_size")]


def _references(params: ReportParams) -> dict[str, dict[str, str]]:
    """{dataset: {"control": run, "supervised": run}} from `report.control/supervised`."""
    out: dict[str, dict[str, str]] = {}
    for kind in ("control", "supervised"):
        for name in getattr(params.report, kind):
            out.setdefault(params.runs[name].dataset, {})[kind] = name
    return out


def summarise(rows: pl.DataFrame, params: ReportParams) -> pl.DataFrame:
    """One row per run: mean and sample std over seeds of every metric (std is null for a
    single seed, so one seed never looks like zero spread), and `gap_closed`."""
    metrics = metric_columns(rows)
    summary = rows.group_by("run", maintain_order=True).agg(
        pl.col("dataset", "method", "epochs").first(), pl.len().alias("seeds"),
        *[pl.col(m).mean().alias(f"{m}_mean") for m in metrics],
        *[pl.col(m).std().alias(f"{m}_std") for m in metrics])
    accuracy = dict(zip(summary["run"], summary[f"{ACCURACY}_mean"], strict=True))
    references = _references(params)
    gaps = []
    for name, dataset in zip(summary["run"], summary["dataset"], strict=True):
        refs = references.get(dataset, {})
        low, high = accuracy.get(refs.get("control")), accuracy.get(refs.get("supervised"))
        gaps.append(None if low is None or high is None or math.isclose(low, high)
                    else (accuracy[name] - low) / (high - low))
    return summary.with_columns(pl.Series("gap_closed", gaps, dtype=pl.Float64))


def comparison_pairs(params: ReportParams) -> list[tuple[str, str, str]]:
    """(run, baseline, kind): every run against its control and supervised run (the
    control itself only as the supervised run's baseline), then the listed comparisons."""
    pairs = []
    references = _references(params)
    for name, run in params.runs.items():
        refs = references.get(run.dataset, {})
        if name == refs.get("control"):
            continue
        for kind, baseline in refs.items():
            if baseline != name:
                pairs.append((name, baseline, f"vs {kind}"))
    pairs += [(run, baseline, "listed") for run, baseline in params.report.comparisons]
    return pairs


def compare_runs(rows: pl.DataFrame, params: ReportParams) -> pl.DataFrame:
    """Paired differences (run - baseline) over seeds for each pair and compared metric,
    with the paired-t interval at `report.confidence` and a verdict. Accuracies are known
    to one test image: their resolution is 1 / the smallest test split of the pair."""
    records = []
    by_run = {name: frame.sort("seed") for (name,), frame in rows.group_by("run")}
    for run, baseline, kind in comparison_pairs(params):
        a, b = by_run[run], by_run[baseline]
        step = 1.0 / min(a["test_size"].min(), b["test_size"].min())
        for metric in compared_metrics(params):
            result = compare_paired(a[metric].to_list(), b[metric].to_list(),
                                    params.report.confidence, metric not in LOWER_IS_BETTER,
                                    step if metric.endswith("_top1") else 0.0)
            records.append({
                "dataset": params.runs[run].dataset, "run": run, "baseline": baseline,
                "kind": kind, "metric": metric,
                "direction": "lower is better" if metric in LOWER_IS_BETTER
                else "higher is better",
                "seeds": result.seeds, "run_mean": a[metric].mean(),
                "baseline_mean": b[metric].mean(), "difference": result.mean,
                "ci_low": result.low, "ci_high": result.high,
                "verdict": result.verdict or f"none ({result.seeds} seed)"})
    schema = {"dataset": pl.String, "run": pl.String, "baseline": pl.String,
              "kind": pl.String, "metric": pl.String, "direction": pl.String,
              "seeds": pl.Int64, "run_mean": pl.Float64, "baseline_mean": pl.Float64,
              "difference": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
              "verdict": pl.String}
    return pl.DataFrame(records, schema=schema)


# ----------------------------------------------------------------------------- efficiency


def monitored_history(plots_dir: Path, params: ReportParams) -> pl.DataFrame:
    """(run, seed, epoch, linear_top1) at every epoch the online linear probe ran; runs
    whose history has no such column (monitor off, the untrained control) add no rows."""
    frames = [pl.DataFrame(schema={"run": pl.String, "seed": pl.Int64, "epoch": pl.Int64,
                                   ACCURACY: pl.Float64})]
    for name in params.runs:
        for seed in params.seeds:
            path = history_path(name, seed, plots_dir)
            try:
                table = pl.read_csv(path, separator="\t", infer_schema_length=None)
            except FileNotFoundError:
                raise UserError(f"{path}: pretraining history missing; run its stage first") \
                    from None
            except pl.exceptions.PolarsError as exc:
                raise UserError(f"{path}: not a history table ({exc.__class__.__name__})") \
                    from None
            if ACCURACY in table.columns and "epoch" in table.columns:
                frames.append(table.select(
                    pl.lit(name).alias("run"), pl.lit(seed, pl.Int64).alias("seed"),
                    pl.col("epoch").cast(pl.Int64), pl.col(ACCURACY).cast(pl.Float64)
                ).drop_nulls(ACCURACY))
    return pl.concat(frames)


def efficiency_curves(history: pl.DataFrame, params: ReportParams) -> pl.DataFrame:
    """Online linear top-1 per run and monitored epoch: mean, sample std, min and max
    over seeds (the band), and how many seeds reached that epoch."""
    runs = pl.DataFrame({"run": list(params.runs),
                         "dataset": [r.dataset for r in params.runs.values()],
                         "method": [r.method for r in params.runs.values()]})
    return (history.group_by("run", "epoch", maintain_order=True)
            .agg(pl.col(ACCURACY).mean().alias("mean"), pl.col(ACCURACY).std().alias("std"),
                 pl.col(ACCURACY).min().alias("min"), pl.col(ACCURACY).max().alias("max"),
                 pl.len().alias("seeds"))
            .join(runs, on="run")
            .select("dataset", "run", "method", "epoch", "mean", "std", "min", "max", "seeds")
            .sort("dataset", "run", "epoch", maintain_order=True))


def epochs_to_reach(curves: pl.DataFrame, params: ReportParams) -> pl.DataFrame:
    """Per run, the first monitored epoch whose mean online linear top-1 reaches
    `report.reach_fraction` x the supervised run's final mean online linear top-1 (null:
    never within its schedule; no target without a monitored supervised run)."""
    fraction = params.report.reach_fraction
    targets = {}
    for dataset, refs in _references(params).items():
        supervised = curves.filter(pl.col("run") == refs.get("supervised", ""))
        if supervised.height:
            targets[dataset] = fraction * supervised.sort("epoch")["mean"][-1]
    records = []
    for (name,), curve in curves.group_by("run", maintain_order=True):
        dataset = params.runs[name].dataset
        target = targets.get(dataset)
        reached = curve.filter(pl.col("mean") >= target) if target is not None else None
        records.append({"dataset": dataset, "run": name, "fraction": fraction,
                        "target_linear_top1": target,
                        "epochs": reached["epoch"].min() if reached is not None
                        and reached.height else None,
                        "of_epochs": params.runs[name].epochs})
    return pl.DataFrame(records, schema={"dataset": pl.String, "run": pl.String,
                                         "fraction": pl.Float64,
                                         "target_linear_top1": pl.Float64,
                                         "epochs": pl.Int64, "of_epochs": pl.Int64})


# -------------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def efficiency_figure(curves: pl.DataFrame, dataset: str) -> Any:
    """Mean online linear top-1 against epochs, one line per run, with the min-max band
    over seeds shaded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    chosen = curves.filter(pl.col("dataset") == dataset)
    for (name,), curve in chosen.group_by("run", maintain_order=True):
        curve = curve.sort("epoch")
        x = curve["epoch"].to_numpy()
        (line,) = ax.plot(x, curve["mean"].to_numpy(), marker="o", markersize=3,
                          label=f"{name} ({curve['seeds'].max()} seeds)")
        ax.fill_between(x, curve["min"].to_numpy(), curve["max"].to_numpy(),
                        color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("pretraining epochs")
    ax.set_ylabel("online linear top-1 (mean; band: min-max over seeds)")
    ax.set_title(f"{dataset}: learning efficiency")
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def comparison_figure(comparisons: pl.DataFrame, dataset: str, metric: str) -> Any:
    """Forest plot: each comparison's mean paired difference with its interval."""
    plt = _pyplot()
    chosen = comparisons.filter((pl.col("dataset") == dataset) & (pl.col("metric") == metric))
    fig, ax = plt.subplots(figsize=(7, 0.45 * chosen.height + 1.2), dpi=100)
    labels = [f"{r} - {b}" for r, b in zip(chosen["run"], chosen["baseline"], strict=True)]
    y = list(range(chosen.height))[::-1]
    means = chosen["difference"].to_numpy()
    low = chosen["ci_low"].fill_null(float("nan")).to_numpy()
    high = chosen["ci_high"].fill_null(float("nan")).to_numpy()
    ax.errorbar(means, y, xerr=[means - low, high - means], fmt="o", capsize=3)
    ax.axvline(0.0, color="0.5", linestyle="--", linewidth=1)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel(f"{metric}: paired difference over seeds (run - baseline)")
    ax.set_title(f"{dataset}: comparisons")
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path) -> None:
    """Write a figure as a PNG (atomically) and release it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    _pyplot().close(fig)


# ------------------------------------------------------------------------------- markdown


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


def _mean_std(metric: str, digits: int = 3) -> pl.Expr:
    mean, std = pl.col(f"{metric}_mean"), pl.col(f"{metric}_std")
    return (pl.when(mean.is_null()).then(pl.lit(""))
            .when(std.is_null()).then(mean.round(digits).cast(pl.String))
            .otherwise(pl.format("{} ± {}", mean.round(digits), std.round(digits)))
            .alias(metric))


def headline_table(summary: pl.DataFrame, dataset: str, params: ReportParams) -> pl.DataFrame:
    """The few columns a reader needs: linear and kNN top-1, crowding, RankMe, gap."""
    knn = f"knn{params.knn.ks[0]}_top1"
    columns = [pl.col("run"), pl.col("method"), pl.col("epochs"), pl.col("seeds"),
               _mean_std(ACCURACY), _mean_std(knn), _mean_std("crowding_index"),
               _mean_std("nc1")]
    if "rankme_mean" in summary.columns:
        columns.append(_mean_std("rankme", 1))
    columns.append(pl.col("gap_closed").round(3))
    return summary.filter(pl.col("dataset") == dataset).select(columns)


def verdict_table(comparisons: pl.DataFrame, dataset: str) -> pl.DataFrame:
    """One row per comparison and metric: difference [interval] and the verdict."""
    interval = (pl.when(pl.col("ci_low").is_null()).then(pl.lit(""))
                .otherwise(pl.format("[{}, {}]", pl.col("ci_low").round(4),
                                     pl.col("ci_high").round(4))))
    return (comparisons.filter(pl.col("dataset") == dataset)
            .select(pl.format("{} vs {}", pl.col("run"), pl.col("baseline")).alias("comparison"),
                    "metric", pl.col("difference").round(4), interval.alias("interval"), "seeds",
                    "verdict"))


def summary_markdown(summary: pl.DataFrame, comparisons: pl.DataFrame,
                     reach: pl.DataFrame, params: ReportParams, figures: dict[str, list[str]]
                     ) -> str:
    """Per dataset: the headline table, the verdicts of the listed comparisons and of the
    comparisons with the control and supervised runs, epochs to reach, figures."""
    confidence = f"{params.report.confidence:.0%}"
    parts = ["# Summary\n",
             f"Mean ± sample std over seeds {params.seeds}. Differences are run - baseline, "
             f"paired by seed, with {confidence} paired-t intervals; a verdict is `better` "
             "or `worse` only when the whole interval is on one side of zero (for "
             "crowding_index and nc1, lower is better). gap_closed = (acc - acc_control) / "
             "(acc_supervised - acc_control) in linear top-1. The full tables are "
             "summary.csv, runs.csv and comparisons.csv.\n"]
    for dataset in summary["dataset"].unique(maintain_order=True):
        parts += [f"## {dataset}\n", to_markdown(headline_table(summary, dataset, params))]
        listed = comparisons.filter(pl.col("kind") == "listed")
        if listed.filter(pl.col("dataset") == dataset).height:
            parts += ["### Listed comparisons\n", to_markdown(verdict_table(listed, dataset))]
        references = comparisons.filter((pl.col("kind") != "listed")
                                        & (pl.col("metric") == ACCURACY))
        if references.filter(pl.col("dataset") == dataset).height:
            parts += ["### Against the control and supervised runs (linear top-1)\n",
                      to_markdown(verdict_table(references, dataset))]
        chosen = reach.filter(pl.col("dataset") == dataset)
        if chosen.height:
            parts += [f"### Epochs to reach {params.report.reach_fraction:.0%} of supervised "
                      "online linear top-1\n",
                      to_markdown(chosen.select("run", "target_linear_top1", "epochs",
                                                "of_epochs"))]
            parts += _reach_below_control(summary, chosen, dataset, params)
        parts += [f"![{Path(f).stem}]({f})\n" for f in figures.get(dataset, [])]
    return "\n".join(parts)


def _reach_below_control(summary: pl.DataFrame, reach: pl.DataFrame, dataset: str,
                         params: ReportParams) -> list[str]:
    """A warning when the reach target is one the untrained control already meets: the
    epochs to reach it then say nothing about learning speed."""
    control = _references(params).get(dataset, {}).get("control")
    targets = reach["target_linear_top1"].drop_nulls()
    scores = summary.filter(pl.col("run") == control)[f"{ACCURACY}_mean"].drop_nulls()
    if targets.is_empty() or scores.is_empty() or targets[0] > scores[0]:
        return []
    return [f"The untrained control `{control}` already scores {scores[0]:.3f} linear "
            f"top-1, at or above this target ({targets[0]:.3f}): raise "
            "`report.reach_fraction` for a target that measures learning.\n"]


def summary_metrics(summary: pl.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """Nested {dataset: {run: {metric_mean/std: value}}} for `dvc metrics show/diff`."""
    numeric = [c for c, dtype in summary.schema.items()
               if dtype.is_numeric() and c not in ("epochs",)]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in summary.iter_rows(named=True):
        values = {c: row[c] for c in numeric
                  if row[c] is not None and not (isinstance(row[c], float) and math.isnan(row[c]))}
        out.setdefault(row["dataset"], {})[row["run"]] = values
    return out


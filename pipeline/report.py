"""The report over all runs and seeds (polars): tables, paired comparisons, efficiency.

- `run_rows`: one row per (run, seed), read through the typed metrics contracts; the
  columns come from params (kNN at each `evaluate.knn.ks`, ...) and the models.
- `summarise`: per run, the mean and sample std over seeds, and the SSL-to-supervised
  gap closed, (acc - acc_control) / (acc_supervised - acc_control) in linear top-1.
- `compare_runs`: every run against its dataset's control and supervised runs, and each
  `report.comparisons` pair, joined on the seed: paired differences, an interval, a
  p-value, a verdict (or `undefined (reason)`), the detectable effect;
  `adjust_for_multiplicity` adds Holm's adjusted p-values and verdicts per family.
- efficiency: online linear top-1 against epochs per run (mean, std, min, max over
  seeds), and the first epoch from which each curve stays at or above
  `report.reach_fraction` of supervised (`epochs_to_reach`, compared by `compare_reach`).
- `analyse` / `write_report`: every table, with monitor validity
  (`pipeline.monitor_validity`) and the plain-words claims (`pipeline.claims`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.claims import plain_words
from pipeline.errors import UserError
from pipeline.io import atomic_path
from pipeline.layout import history_path
from pipeline.metrics.base import read_seeded
from pipeline.metrics.geometry import GeometryMetrics
from pipeline.metrics.pretrain import PretrainMetrics
from pipeline.metrics.probe import ProbeMetrics, probe_metric_names
from pipeline.metrics.transfer import read_transfer
from pipeline.monitor_validity import monitor_validity
from pipeline.resolved.report import ReportParams
from pipeline.stats import (
    compare_paired,
    holm,
    p_verdict,
    seeds_needed,
    stable_reach,
    undefined,
)

ACCURACY = "linear_top1"
GEOMETRY_COLUMNS = tuple(GeometryMetrics.model_fields)
PRETRAIN_COLUMNS = ("final_loss", "train_seconds")
# (metric, higher is better) that comparisons report; kNN at the first `evaluate.knn.ks`
LOWER_IS_BETTER = frozenset({"crowding_index", "nc1", "reach_epochs"})


def compared_metrics(params: ReportParams) -> list[str]:
    """The metrics of the paired comparisons: linear and kNN top-1, crowding, NC1."""
    return [ACCURACY, f"knn{params.knn.ks[0]}_top1", "crowding_index", "nc1"]


def run_rows(results_dir: Path, params: ReportParams) -> pl.DataFrame:
    """One row per (run, seed): identity, then every metric the report keeps."""
    probe_columns = probe_metric_names(params.knn, params.low_shot)
    rows = []
    for name, run in params.runs.items():
        def read(stage: str, model: type, name: str = name) -> dict:
            return read_seeded(results_dir / stage / f"{name}.json", model, params.seeds)

        pretrain, probe = read("pretrain", PretrainMetrics), read("probe", ProbeMetrics)
        geometry = read("geometry", GeometryMetrics)
        transfer = read_transfer(results_dir / "transfer" / f"{name}.json", params.seeds)
        for seed in params.seeds:
            row: dict[str, Any] = {"run": name, "dataset": run.dataset,
                                   "method": run.method, "seed": seed,
                                   "epochs": run.epochs}
            row.update({c: getattr(pretrain[seed], c) for c in PRETRAIN_COLUMNS})
            values = probe[seed].model_dump()
            missing = [c for c in probe_columns if c not in values]
            if missing:
                raise UserError(f"{results_dir / 'probe' / f'{name}.json'}: no {missing[0]} "
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


def controls(params: ReportParams) -> dict[str, str]:
    """{dataset: its untrained control run}."""
    return {dataset: refs["control"] for dataset, refs in _references(params).items()
            if "control" in refs}


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


COMPARISON_SCHEMA = {
    "dataset": pl.String, "run": pl.String, "baseline": pl.String, "kind": pl.String,
    "metric": pl.String, "direction": pl.String, "seeds": pl.Int64,
    "run_mean": pl.Float64, "baseline_mean": pl.Float64, "difference": pl.Float64,
    "ci_low": pl.Float64, "ci_high": pl.Float64, "p_value": pl.Float64, "sd": pl.Float64,
    "detectable": pl.Float64, "seeds_for_detect": pl.Int64, "verdict": pl.String}


def paired_by_seed(run: pl.DataFrame, baseline: pl.DataFrame, column: str,
                   names: tuple[str, str]) -> tuple[list[Any], list[Any], str | None]:
    """The two runs' values of `column`, joined on the seed column (never by position),
    and why they cannot be compared (a seed one run lacks, a missing or NaN value)."""
    joined = (run.select("seed", pl.col(column).alias("a"))
              .join(baseline.select("seed", pl.col(column).alias("b")), on="seed",
                    how="full", coalesce=True).sort("seed"))
    for side, name, frame in (("a", names[0], run), ("b", names[1], baseline)):
        absent = sorted(set(joined["seed"]) - set(frame["seed"]))
        if absent:
            return [], [], f"{name} has no seed {absent[0]}"
        for seed, value in zip(joined["seed"], joined[side], strict=True):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return [], [], f"{name} seed {seed}: {column} is {value}"
    return joined["a"].to_list(), joined["b"].to_list(), None


def comparison_record(run: str, baseline: str, kind: str, dataset: str, metric: str,
                      values: tuple[list[Any], list[Any], str | None], params: ReportParams,
                      resolution: float = 0.0) -> dict[str, Any]:
    """One row of comparisons.csv: the paired difference, interval, p-value, verdict,
    detectable effect and, for accuracies, the seeds needed to detect `report.detect`."""
    a, b, reason = values
    higher_is_better = metric not in LOWER_IS_BETTER
    record = {"dataset": dataset, "run": run, "baseline": baseline, "kind": kind,
              "metric": metric,
              "direction": "higher is better" if higher_is_better else "lower is better",
              "seeds": None if reason is not None else len(a)}
    if reason is not None:
        return record | {"verdict": undefined(reason)}
    result = compare_paired(a, b, params.report.confidence, higher_is_better, resolution)
    needed = (seeds_needed(params.report.detect, result.sd, 1 - params.report.confidence)
              if result.sd is not None and metric.endswith("_top1") else None)
    return record | {
        "run_mean": math.fsum(a) / len(a), "baseline_mean": math.fsum(b) / len(b),
        "difference": result.mean, "ci_low": result.low, "ci_high": result.high,
        "p_value": result.p_value, "sd": result.sd, "detectable": result.detectable,
        "seeds_for_detect": needed,
        "verdict": result.verdict or f"none ({result.seeds} seed)"}


def compare_runs(rows: pl.DataFrame, params: ReportParams) -> pl.DataFrame:
    """Paired differences (run - baseline) over seeds for each pair and compared metric,
    with the paired-t interval at `report.confidence`, its p-value, a verdict and the
    detectable effect. Accuracies are known to one test image: their resolution is
    1 / the smallest test split of the pair."""
    records = []
    by_run = {name: frame for (name,), frame in rows.group_by("run")}
    for run, baseline, kind in comparison_pairs(params):
        a, b = by_run[run], by_run[baseline]
        step = 1.0 / min(a["test_size"].min(), b["test_size"].min())
        for metric in compared_metrics(params):
            records.append(comparison_record(
                run, baseline, kind, params.runs[run].dataset, metric,
                paired_by_seed(a, b, metric, (run, baseline)), params,
                step if metric.endswith("_top1") else 0.0))
    return pl.DataFrame(records, schema=COMPARISON_SCHEMA)


def adjust_for_multiplicity(comparisons: pl.DataFrame, alpha: float) -> pl.DataFrame:
    """Holm's adjustment within each family: per dataset, the listed comparisons (the
    study's claims: every listed pair x compared metric, reach included) and the
    comparisons with the control and supervised runs (the references). Comparisons
    without a p-value (undefined, one seed) are not tested and stay out of the family."""
    family = pl.when(pl.col("kind") == "listed").then(pl.lit("claims")) \
        .otherwise(pl.lit("references"))
    frame = comparisons.with_row_index("_order").with_columns(family.alias("family"))
    parts = []
    for _, group in frame.group_by("dataset", "family", maintain_order=True):
        tested = group.filter(pl.col("p_value").is_not_null())
        adjusted = dict(zip(tested["_order"], holm(tested["p_value"].to_list()),
                            strict=True))
        p_holm = [adjusted.get(i) for i in group["_order"]]
        verdicts = [verdict if p is None else
                    p_verdict(difference, p, alpha, direction == "higher is better")
                    for p, difference, direction, verdict in zip(
                        p_holm, group["difference"], group["direction"], group["verdict"],
                        strict=True)]
        parts.append(group.with_columns(
            pl.lit(tested.height, pl.Int64).alias("family_size"),
            pl.Series("p_holm", p_holm, dtype=pl.Float64),
            pl.Series("verdict_holm", verdicts, dtype=pl.String)))
    if not parts:
        return comparisons.with_columns(
            pl.lit(None, pl.String).alias("family"), pl.lit(None, pl.Int64).alias("family_size"),
            pl.lit(None, pl.Float64).alias("p_holm"), pl.lit(None, pl.String).alias("verdict_holm"))
    return pl.concat(parts).sort("_order").drop("_order")


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


REACH_SCHEMA = {"dataset": pl.String, "run": pl.String, "seed": pl.Int64,
                "fraction": pl.Float64, "target_linear_top1": pl.Float64,
                "epochs": pl.Int64, "of_epochs": pl.Int64}
REACH = "reach_epochs"


def reach_targets(curves: pl.DataFrame, params: ReportParams) -> dict[str, float]:
    """Per dataset, `report.reach_fraction` x the supervised run's final mean online
    linear top-1 (no target without a monitored supervised run)."""
    targets = {}
    for dataset, refs in _references(params).items():
        supervised = curves.filter(pl.col("run") == refs.get("supervised", ""))
        if supervised.height:
            targets[dataset] = params.report.reach_fraction * supervised.sort("epoch")["mean"][-1]
    return targets


def epochs_to_reach(curves: pl.DataFrame, history: pl.DataFrame | None, params: ReportParams
                    ) -> pl.DataFrame:
    """Per monitored run, the first epoch from which its online linear top-1 stays at or
    above the target: for the mean curve (`seed` empty) and for each seed's curve in
    `history` (None when the per-seed curves are not available). `epochs` is empty when a
    curve is not at or above the target by the end of its schedule: not reached."""
    targets, records = reach_targets(curves, params), []
    for (name,), curve in curves.group_by("run", maintain_order=True):
        dataset = params.runs[name].dataset
        target = targets.get(dataset)
        per_seed = [] if history is None else [
            (seed, frame) for (seed,), frame in
            history.filter(pl.col("run") == name).group_by("seed", maintain_order=True)]
        for seed, frame, column in [(None, curve, "mean")] + [
                (seed, frame, ACCURACY) for seed, frame in sorted(per_seed)]:
            records.append({
                "dataset": dataset, "run": name, "seed": seed,
                "fraction": params.report.reach_fraction, "target_linear_top1": target,
                "epochs": None if target is None else stable_reach(
                    frame["epoch"].to_list(), frame[column].to_list(), target),
                "of_epochs": params.runs[name].epochs})
    return pl.DataFrame(records, schema=REACH_SCHEMA)


def compare_reach(reach: pl.DataFrame, curves: pl.DataFrame, params: ReportParams
                  ) -> pl.DataFrame:
    """The listed comparisons on per-seed epochs to reach (lower is better), paired by
    seed like any metric, with the monitoring interval as the resolution. A seed that
    never reaches the target makes the comparison undefined: `not reached` is not an
    epoch count."""
    per_seed = reach.filter(pl.col("seed").is_not_null())
    records = []
    for run, baseline in params.report.comparisons:
        a, b = (per_seed.filter(pl.col("run") == name) for name in (run, baseline))
        if a.is_empty() or b.is_empty():
            values: tuple[list[Any], list[Any], str | None] = (
                [], [], f"no per-seed online curve for {run if a.is_empty() else baseline}")
        else:
            values = _reached_by_seed(a, b, (run, baseline))
        step = curves.filter(pl.col("run").is_in([run, baseline]))["epoch"].unique().sort()
        records.append(comparison_record(
            run, baseline, "listed", params.runs[run].dataset, REACH, values, params,
            float(step.diff().min()) if step.len() > 1 else 1.0))
    return pl.DataFrame(records, schema=COMPARISON_SCHEMA)


def _reached_by_seed(run: pl.DataFrame, baseline: pl.DataFrame, names: tuple[str, str]
                     ) -> tuple[list[Any], list[Any], str | None]:
    """Per-seed reach epochs paired by seed, or why not: a seed that never reaches."""
    for frame, name in ((run, names[0]), (baseline, names[1])):
        missed = frame.filter(pl.col("epochs").is_null())["seed"].sort()
        if missed.len():
            return [], [], (f"{name} seed {missed[0]} does not reach the target within "
                            f"{frame['of_epochs'][0]} epochs")
    return paired_by_seed(run, baseline, "epochs", names)


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


def _interval(low: str, high: str, digits: int = 4) -> pl.Expr:
    return (pl.when(pl.col(low).is_null()).then(pl.lit(""))
            .otherwise(pl.format("[{}, {}]", pl.col(low).round(digits),
                                 pl.col(high).round(digits))))


def verdict_table(comparisons: pl.DataFrame, dataset: str) -> pl.DataFrame:
    """One row per comparison and metric: difference [interval], the raw p-value and
    verdict, Holm's adjusted p-value and verdict, and the detectable effect."""
    return (comparisons.filter(pl.col("dataset") == dataset)
            .select(pl.format("{} vs {}", pl.col("run"), pl.col("baseline")).alias("comparison"),
                    "metric", pl.col("difference").round(4),
                    _interval("ci_low", "ci_high").alias("interval"), "seeds",
                    pl.col("p_value").round(4).alias("p"), "verdict",
                    pl.col("p_holm").round(4).alias("p (Holm)"),
                    pl.col("verdict_holm").alias("verdict (Holm)"),
                    pl.col("detectable").round(4), "seeds_for_detect"))


def reach_table(reach: pl.DataFrame, dataset: str) -> pl.DataFrame:
    """Per run: the epoch from which the mean curve stays at or above the target, the
    per-seed epochs (`-`: not reached), and the schedule."""
    chosen = reach.filter(pl.col("dataset") == dataset)
    per_seed = (chosen.filter(pl.col("seed").is_not_null()).sort("seed")
                .group_by("run", maintain_order=True)
                .agg(pl.col("epochs").cast(pl.String).fill_null("-").str.join(", ")
                     .alias("per seed")))
    return (chosen.filter(pl.col("seed").is_null())
            .join(per_seed, on="run", how="left")
            .select("run", pl.col("target_linear_top1").round(4).alias("target"),
                    pl.col("epochs").alias("mean curve"),
                    pl.col("per seed").fill_null("not recorded"), "of_epochs"))


def _reach_section(reach: pl.DataFrame, summary: pl.DataFrame, dataset: str,
                   params: ReportParams) -> list[str]:
    chosen = reach.filter(pl.col("dataset") == dataset)
    if not chosen.height:
        return []
    return [f"### Epochs to reach {params.report.reach_fraction:.0%} of supervised online "
            "linear top-1\n",
            "The first monitored epoch from which the curve stays at or above the target "
            "(a later dip below moves it later); empty or `-`: not reached within the "
            "schedule. The listed comparisons compare the per-seed epochs (`reach_epochs`, "
            "lower is better).\n",
            to_markdown(reach_table(chosen, dataset)),
            *_reach_below_control(summary, chosen, dataset, params)]


def monitor_table(validity: pl.DataFrame, dataset: str) -> pl.DataFrame:
    return (validity.filter(pl.col("dataset") == dataset)
            .select("monitor", pl.col("spearman").round(3), "points",
                    pl.col("spearman_without_control").round(3).alias("spearman (trained)"),
                    pl.col("points_without_control").alias("points (trained)"), "flag"))


def _monitor_section(validity: pl.DataFrame, dataset: str) -> list[str]:
    if not validity.filter(pl.col("dataset") == dataset).height:
        return []
    return ["### Monitor validity\n",
            "Spearman rank correlation of each label-free monitor with linear top-1 over "
            "runs x seeds, with and without the untrained control (alpha-ReQ scored as "
            "-|alpha - 1|). A flagged monitor rates the untrained control above trained "
            "runs: it cannot stand in for labels on this data.\n",
            to_markdown(monitor_table(validity, dataset))]


def summary_markdown(summary: pl.DataFrame, comparisons: pl.DataFrame,
                     reach: pl.DataFrame, params: ReportParams, figures: dict[str, list[str]],
                     validity: pl.DataFrame | None = None) -> str:
    """Per dataset: the plain-words summary of the claims, the headline table, the
    verdicts of the listed comparisons and of the comparisons with the control and
    supervised runs, epochs to reach, monitor validity, figures."""
    confidence = f"{params.report.confidence:.0%}"
    alpha = 1 - params.report.confidence
    parts = ["# Summary\n",
             f"Mean ± sample std over seeds {params.seeds}. Differences are run - baseline, "
             f"joined on the seed, with {confidence} paired-t intervals and two-sided p-values "
             "(the sd never below the metric's resolution: one test image, one monitoring "
             "interval); a verdict is `better` or `worse` only when the whole interval is "
             "on one side of zero (for crowding_index, nc1 and reach_epochs, lower is "
             "better), and `undefined (reason)` when a value is missing or not a number. "
             "Holm's step-down adjustment runs over two families per dataset: the listed "
             "comparisons x their metrics (the claims), and the comparisons with the "
             f"control and supervised runs; `verdict (Holm)` is decisive when the adjusted "
             f"p < {alpha:.2g}. `detectable`: the smallest true difference this design "
             f"detects with power 0.8 at the unadjusted {alpha:.2g} level (noncentral t, "
             "observed sd); `seeds_for_detect`: the seeds a top-1 comparison needs to "
             f"detect {params.report.detect:g} at the same power. gap_closed = (acc - "
             "acc_control) / (acc_supervised - acc_control) in linear top-1. The full "
             "tables are summary.csv, runs.csv, comparisons.csv, reach.csv, monitors.csv and "
             "(when per-seed online curves were recorded) curves.csv.\n"]
    for dataset in summary["dataset"].unique(maintain_order=True):
        parts.append(f"## {dataset}\n")
        claims = plain_words(comparisons, dataset, params.report.confidence,
                             params.report.detect)
        if claims:
            parts += ["### In plain words\n", *[f"{c}\n" for c in claims]]
        parts.append(to_markdown(headline_table(summary, dataset, params)))
        listed = comparisons.filter(pl.col("kind") == "listed")
        if listed.filter(pl.col("dataset") == dataset).height:
            parts += ["### Listed comparisons\n", to_markdown(verdict_table(listed, dataset))]
        references = comparisons.filter((pl.col("kind") != "listed")
                                        & (pl.col("metric") == ACCURACY))
        if references.filter(pl.col("dataset") == dataset).height:
            parts += ["### Against the control and supervised runs (linear top-1)\n",
                      "Holm's family here is every metric of these comparisons; the other "
                      "metrics are in comparisons.csv.\n",
                      to_markdown(verdict_table(references, dataset))]
        parts += _reach_section(reach, summary, dataset, params)
        if validity is not None:
            parts += _monitor_section(validity, dataset)
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
    """The report's headline for `dvc metrics show/diff`: {dataset: {run: {gap_closed}}},
    for the runs whose gap is defined (the probes' and geometry's headlines are their
    stages' metrics files; every other number is in reports/)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in summary.iter_rows(named=True):
        gap = row["gap_closed"]
        if gap is not None and not math.isnan(gap):
            out.setdefault(row["dataset"], {})[row["run"]] = {"gap_closed": gap}
    return out



# --------------------------------------------------------------------------- the analysis


@dataclass(frozen=True)
class Analysis:
    """Every table of the report. `history` (per-seed online curves) is None when a
    report is rebuilt from tables that never recorded them."""

    rows: pl.DataFrame
    summary: pl.DataFrame
    comparisons: pl.DataFrame
    curves: pl.DataFrame
    history: pl.DataFrame | None
    reach: pl.DataFrame
    validity: pl.DataFrame


def analyse(rows: pl.DataFrame, curves: pl.DataFrame, history: pl.DataFrame | None,
            params: ReportParams) -> Analysis:
    """Summary, comparisons (metrics and reach, Holm-adjusted), reach, monitor validity."""
    reach = epochs_to_reach(curves, history, params)
    comparisons = pl.concat([compare_runs(rows, params), compare_reach(reach, curves, params)])
    comparisons = adjust_for_multiplicity(comparisons, 1 - params.report.confidence)
    return Analysis(rows, summarise(rows, params), comparisons, curves, history, reach,
                    monitor_validity(rows, controls(params)))


def write_report(out: Path, analysis: Analysis, params: ReportParams, note: str = "") -> str:
    """Write the tables, figures and summary.md into `out`; return the Markdown (with
    `note` appended)."""
    figures: dict[str, list[str]] = {}
    curves, comparisons = analysis.curves, analysis.comparisons
    for dataset in analysis.summary["dataset"].unique(maintain_order=True):
        names = []
        if curves.filter(pl.col("dataset") == dataset).height:
            names.append(f"figures/efficiency_{dataset}.png")
            save_figure(efficiency_figure(curves, dataset), out / names[-1])
        if comparisons.filter(pl.col("dataset") == dataset).height:
            names.append(f"figures/comparisons_{dataset}.png")
            save_figure(comparison_figure(comparisons, dataset, ACCURACY), out / names[-1])
        figures[dataset] = names
    markdown = summary_markdown(analysis.summary, comparisons, analysis.reach, params,
                                figures, analysis.validity) + note
    analysis.rows.write_csv(out / "runs.csv")
    analysis.summary.write_csv(out / "summary.csv")
    comparisons.write_csv(out / "comparisons.csv")
    curves.write_csv(out / "efficiency.csv")
    if analysis.history is not None:
        analysis.history.write_csv(out / "curves.csv")
    analysis.reach.write_csv(out / "reach.csv")
    analysis.validity.write_csv(out / "monitors.csv")
    (out / "summary.md").write_text(markdown)
    return markdown

"""The plain-words summary: one paragraph per listed comparison (a claim of the study),
generated from comparisons.csv, that says no more than the Holm-adjusted verdicts.

A difference that is decisive unadjusted but not after Holm's adjustment is written as
"no detectable difference", with the unadjusted result beside it; a null verdict always
comes with the smallest difference the study could have detected.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pipeline.stats import BETTER, UNDECIDED, WORSE


def metric_words(metric: str) -> str:
    """`linear top-1`, `kNN-20 top-1`, `crowding index`, `NC1`, `epochs to reach`."""
    if metric.startswith("knn") and metric.endswith("_top1"):
        return f"kNN-{metric[3:-5]} top-1"
    return {"linear_top1": "linear top-1", "crowding_index": "crowding index",
            "nc1": "NC1", "reach_epochs": "epochs to reach the target"}.get(
                metric, metric.replace("_", " "))


def amount(metric: str, value: float, signed: bool = False) -> str:
    """Accuracies in points (0.012 -> 1.2 points), epochs in epochs, the rest as is."""
    sign = "+" if signed else ""
    if metric.endswith("_top1"):
        return f"{100 * value:{sign}.1f} points"
    if metric == "reach_epochs":
        return f"{value:{sign}.1f} epochs"
    return f"{value:{sign}.3g}"


def sentence(row: dict[str, Any], confidence: float) -> str:
    """One metric of one claim, in words."""
    metric, name = row["metric"], metric_words(row["metric"])
    if row["verdict"].startswith(("undefined", "none")):
        return f"{name}: {row['verdict']}."
    measured = (f"{amount(metric, row['difference'], signed=True)}, {confidence:.0%} "
                f"interval {amount(metric, row['ci_low'], True)} to "
                f"{amount(metric, row['ci_high'], True)}")
    detectable = f"this study could detect {amount(metric, row['detectable'])} or more"
    adjusted = f"Holm-adjusted p = {row['p_holm']:.2g} over {row['family_size']} tests"
    if row["verdict_holm"] in (BETTER, WORSE):
        return (f"{name}: {row['verdict_holm']} ({measured}; {adjusted}).")
    text = f"{name}: {UNDECIDED} ({measured}); {detectable}"
    if row["verdict"] != UNDECIDED:
        text += (f". Unadjusted the interval excludes zero (p = {row['p_value']:.2g}), but "
                 f"not after adjustment ({adjusted})")
    if row["seeds_for_detect"] is not None:
        text += f"; {row['seeds_for_detect']} seeds would detect {row['_detect']}"
    return text + "."


def plain_words(comparisons: pl.DataFrame, dataset: str, confidence: float,
                detect: float) -> list[str]:
    """One paragraph per listed [run, baseline] pair of `dataset`."""
    listed = comparisons.filter((pl.col("dataset") == dataset) & (pl.col("kind") == "listed"))
    paragraphs = []
    for (run, baseline), claim in listed.group_by("run", "baseline", maintain_order=True):
        seeds = claim["seeds"].max()
        rows = claim.with_columns(pl.lit(amount("linear_top1", detect)).alias("_detect"))
        paragraphs.append(
            f"**{run} vs {baseline}** ({seeds} seeds): "
            + " ".join(sentence(row, confidence) for row in rows.iter_rows(named=True)))
    return paragraphs

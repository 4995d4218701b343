"""Can a label-free monitor stand in for labels on this data? Its Spearman rank
correlation with linear top-1 over a study's runs x seeds, with and without the untrained
control, and a flag when it ranks the control above trained runs.

Each monitor is oriented so that higher means a better representation: RankMe, LiDAR
and effective rank as they are, alpha-ReQ as -|alpha - 1| (a power-law decay exponent
near 1 is the healthy one). Points of one run share its method, so the correlation is
a description, not a test: no p-value is given.
"""

from __future__ import annotations

import polars as pl

ACCURACY = "linear_top1"
MONITORS: dict[str, pl.Expr] = {
    "rankme": pl.col("rankme"),
    "lidar": pl.col("lidar"),
    "effective_rank": pl.col("effective_rank"),
    "alpha_req": -(pl.col("alpha_req") - 1).abs(),
}
SCHEMA = {"dataset": pl.String, "monitor": pl.String, "spearman": pl.Float64,
          "points": pl.Int64, "spearman_without_control": pl.Float64,
          "points_without_control": pl.Int64, "control_above": pl.Int64,
          "trained_runs": pl.Int64, "flag": pl.String}


def spearman(frame: pl.DataFrame) -> tuple[float | None, int, str]:
    """Spearman's rho between `score` and linear top-1 over the finite points (average
    ranks for ties), how many points, and why rho is undefined ("" when it is not)."""
    points = frame.filter(pl.col("score").is_finite() & pl.col(ACCURACY).is_finite())
    if points.height < 3:
        return None, points.height, f"undefined ({points.height} finite points)"
    if points["score"].n_unique() < 2 or points[ACCURACY].n_unique() < 2:
        return None, points.height, "undefined (a constant column)"
    rho = points.select(pl.corr("score", ACCURACY, method="spearman"))[0, 0]
    return float(rho), points.height, ""


def control_above(frame: pl.DataFrame, control: str) -> tuple[int, int]:
    """How many trained runs score (mean over seeds) below the control, of how many."""
    means = frame.group_by("run").agg(pl.col("score").mean())
    scores = dict(zip(means["run"], means["score"], strict=True))
    if scores.get(control) is None:
        return 0, len(scores)
    trained = [s for run, s in scores.items() if run != control and s is not None]
    return sum(s < scores[control] for s in trained), len(trained)


def monitor_validity(rows: pl.DataFrame, controls: dict[str, str]) -> pl.DataFrame:
    """One row per dataset and monitor present in `rows` (one row per run and seed);
    `controls` names each dataset's untrained control run."""
    records = []
    for (dataset,), group in rows.group_by("dataset", maintain_order=True):
        control = controls.get(dataset)
        for monitor, expression in MONITORS.items():
            if monitor not in group.columns:
                continue
            scored = group.select("run", ACCURACY, expression.cast(pl.Float64).alias("score"))
            rho, points, reason = spearman(scored)
            trained_only = scored if control is None else scored.filter(pl.col("run") != control)
            rho_trained, points_trained, _ = spearman(trained_only)
            above, trained = control_above(scored, control) if control else (0, 0)
            records.append({
                "dataset": dataset, "monitor": monitor, "spearman": rho, "points": points,
                "spearman_without_control": rho_trained,
                "points_without_control": points_trained, "control_above": above,
                "trained_runs": trained,
                "flag": (f"ranks the untrained control above {above} of {trained} "
                         "trained runs") if above else reason})
    return pl.DataFrame(records, schema=SCHEMA)

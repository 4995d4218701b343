"""Monitor validity: Spearman of each label-free monitor with linear top-1 (against
scipy), with and without the control, and the flag for a monitor that rates the untrained
control above trained runs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pipeline.monitor_validity import monitor_validity


def rows() -> pl.DataFrame:
    """Three runs x three seeds; LiDAR rates the control highest, as on Fashion-MNIST."""
    rng = np.random.default_rng(0)
    runs = {"random": 0.75, "simclr": 0.79, "supervised": 0.83}
    records = []
    for run, accuracy in runs.items():
        for seed in range(3):
            top1 = accuracy + rng.normal(0, 0.005)
            records.append({
                "run": run, "dataset": "fmnist", "seed": seed, "linear_top1": top1,
                "rankme": 100 * top1 + rng.normal(0, 0.5),
                "lidar": {"random": 41.5, "simclr": 23.3, "supervised": 22.4}[run]
                + rng.normal(0, 1),
                "effective_rank": 30.0 + (seed if run != "random" else 5.0),  # ties
                "alpha_req": {"random": 1.7, "simclr": 1.2, "supervised": 1.05}[run]
                + rng.normal(0, 0.02)})
    return pl.DataFrame(records)


def test_spearman_matches_scipy_with_and_without_the_control():
    table = rows()
    validity = {r["monitor"]: r for r in monitor_validity(table, {"fmnist": "random"})
                .iter_rows(named=True)}
    trained = table.filter(pl.col("run") != "random")
    for monitor, score in (("rankme", table["rankme"]), ("lidar", table["lidar"]),
                           ("effective_rank", table["effective_rank"]),
                           ("alpha_req", -(table["alpha_req"] - 1).abs())):
        expected = stats.spearmanr(score, table["linear_top1"]).statistic
        assert validity[monitor]["spearman"] == pytest.approx(expected)
        assert validity[monitor]["points"] == 9
        mask = (table["run"] != "random").to_numpy()
        expected = stats.spearmanr(score.to_numpy()[mask], trained["linear_top1"]).statistic
        assert validity[monitor]["spearman_without_control"] == pytest.approx(expected)
        assert validity[monitor]["points_without_control"] == 6


def test_a_monitor_that_rates_the_control_above_trained_runs_is_flagged():
    validity = {r["monitor"]: r for r in monitor_validity(rows(), {"fmnist": "random"})
                .iter_rows(named=True)}
    assert validity["rankme"]["flag"] == ""
    assert validity["lidar"]["flag"] == "ranks the untrained control above 2 of 2 trained runs"
    assert validity["alpha_req"]["control_above"] == 0  # |1.7 - 1| is the farthest from 1
    assert validity["effective_rank"]["control_above"] == 2


def test_missing_values_leave_the_correlation_undefined():
    table = rows().with_columns(pl.lit(None, pl.Float64).alias("rankme"),
                                pl.lit(float("nan")).alias("lidar"),
                                pl.lit(3.0).alias("effective_rank"))
    validity = {r["monitor"]: r for r in monitor_validity(table, {"fmnist": "random"})
                .iter_rows(named=True)}
    assert validity["rankme"]["spearman"] is None
    assert validity["rankme"]["flag"] == "undefined (0 finite points)"
    assert validity["lidar"]["flag"] == "undefined (0 finite points)"
    assert validity["effective_rank"]["flag"] == "undefined (a constant column)"
    # a monitor the rows do not have is not listed
    assert "alpha_req" not in {r["monitor"] for r in monitor_validity(
        table.drop("alpha_req"), {}).iter_rows(named=True)}

"""The report: seeds aggregated, the gap closed vs base and vs SimCLR, efficiency curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipeline.errors import UserError
from pipeline.params import RunConfig
from pipeline.report import (
    aggregate_seeds,
    efficiency_curves,
    gap_closed,
    run_rows,
    save_efficiency_figure,
    summary_markdown,
    summary_metrics,
)


class Regulator(BaseModel):
    name: str = "dsa"


class RegulatedRun(RunConfig):
    """RunConfig as the methods engineer extends it (an optional `regulator`)."""

    regulator: Regulator | None = None


def run(method: str, seed: int = 0, epochs: int = 10, regulated: bool = False) -> RunConfig:
    return RegulatedRun(dataset="digits", seed=seed, backbone={"name": "small_cnn"},
                        method={"name": method}, train={"epochs": epochs},
                        regulator=Regulator() if regulated else None)


def write_metrics(root: Path, name: str, linear_top1: float) -> None:
    for stage, values in {"pretrain": {"final_loss": 1.0},
                          "probe": {"linear_top1": linear_top1, "knn20_top1": 0.5},
                          "transfer": {"digits_heldout": {"linear_top1": 0.9}},
                          "geometry": {"crowding_index": 0.3}}.items():
        (root / stage).mkdir(parents=True, exist_ok=True)
        (root / stage / f"{name}.json").write_text(json.dumps(values))


@pytest.fixture
def table(tmp_path: Path):
    runs = {"supervised": run("supervised"), "simclr": run("simclr"),
            "simclr-s1": run("simclr", seed=1), "simclr-dsa": run("simclr", regulated=True),
            "simclr-dsa-s1": run("simclr", seed=1, regulated=True),
            "simclr-e5": run("simclr", epochs=5)}
    accuracy = {"supervised": 0.9, "simclr": 0.6, "simclr-s1": 0.7, "simclr-dsa": 0.8,
                "simclr-dsa-s1": 0.8, "simclr-e5": 0.5}
    for name, value in accuracy.items():
        write_metrics(tmp_path, name, value)
    return gap_closed(aggregate_seeds(run_rows(tmp_path, runs)))


def by_group(table) -> dict[str, dict]:
    return {row["group"]: row for row in table.iter_rows(named=True)}


def test_seeds_are_aggregated_into_mean_and_std(table):
    groups = by_group(table)
    assert set(groups) == {"supervised", "simclr", "simclr-dsa", "simclr-e5"}
    assert groups["simclr"]["seeds"] == 2
    assert groups["simclr"]["linear_top1_mean"] == pytest.approx(0.65)
    assert groups["simclr"]["linear_top1_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert groups["supervised"]["linear_top1_std"] is None  # one seed: no spread claimed
    assert groups["simclr-dsa"]["method"] == "simclr+dsa"
    assert groups["simclr"]["transfer_digits_heldout_linear_top1_mean"] == pytest.approx(0.9)


def test_gap_closed_relative_to_base_and_to_simclr(table):
    groups = by_group(table)
    # DSA on SimCLR: (0.8 - 0.65) / (0.9 - 0.65) of the gap to supervised
    assert groups["simclr-dsa"]["gap_closed_vs_base"] == pytest.approx(0.6)
    assert groups["simclr-dsa"]["gap_closed_vs_simclr"] == pytest.approx(0.6)
    assert groups["simclr"]["gap_closed_vs_base"] is None  # no regulator, no base
    assert groups["simclr"]["gap_closed_vs_simclr"] is None
    assert groups["supervised"]["gap_closed_vs_simclr"] is None


def test_efficiency_curve_joins_epoch_budgets(table, tmp_path: Path):
    curves = efficiency_curves(table)
    simclr = curves.filter(curves["curve"] == "simclr (simclr)")
    assert simclr["epochs"].to_list() == [5, 10]
    assert simclr["linear_top1_mean"].to_list() == pytest.approx([0.5, 0.65])
    save_efficiency_figure(curves, "digits", tmp_path / "efficiency.png")
    assert (tmp_path / "efficiency.png").read_bytes()[:4] == b"\x89PNG"


def test_markdown_and_dvc_metrics(table):
    markdown = summary_markdown(table)
    assert "## digits" in markdown and "0.65 ± 0.0707" in markdown
    metrics = summary_metrics(table)
    assert metrics["digits"]["simclr-dsa"]["gap_closed_vs_base"] == pytest.approx(0.6)
    assert "linear_top1_std" not in metrics["digits"]["supervised"]


def test_missing_metrics_name_the_file(tmp_path: Path):
    with pytest.raises(UserError, match=r"metrics/pretrain/simclr.json: metrics file missing"):
        run_rows(tmp_path / "metrics", {"simclr": run("simclr")})


def test_fine_tuned_transfer_gets_a_column_only_where_a_run_fine_tuned(tmp_path: Path):
    runs = {"simclr": run("simclr"), "byol": run("byol")}
    write_metrics(tmp_path, "simclr", 0.6)
    write_metrics(tmp_path, "byol", 0.7)
    (tmp_path / "transfer" / "byol.json").write_text(json.dumps(
        {"digits_heldout": {"linear_top1": 0.9, "finetune_top1": 0.95}}))
    rows = {row["run"]: row for row in run_rows(tmp_path, runs).iter_rows(named=True)}
    assert rows["byol"]["transfer_digits_heldout_finetune_top1"] == 0.95
    assert rows["simclr"]["transfer_digits_heldout_finetune_top1"] is None
    assert rows["simclr"]["transfer_digits_heldout_linear_top1"] == 0.9

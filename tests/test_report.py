"""The report: seeds aggregated, the gap closed vs base and vs SimCLR, efficiency curves
(one per group, from the monitored history, plus the final probe)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipeline.errors import UserError
from pipeline.io import write_tsv
from pipeline.params import RunConfig
from pipeline.report import (
    aggregate_seeds,
    efficiency_curves,
    efficiency_figure,
    gap_closed,
    monitored_history,
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


def write_history(root: Path, name: str, epochs: int, monitored: dict[int, float]) -> None:
    """plots/pretrain/<name>.tsv as the pretrain stage writes it: a row per epoch, the
    online probes only at monitored epochs (empty cells elsewhere, no column if never)."""
    rows = [{"epoch": e, "loss": 1.0 / e, **({"knn_top1": 0.5, "linear_top1": monitored[e]}
                                             if e in monitored else {})}
            for e in range(1, epochs + 1)]
    extra = ["knn_top1", "linear_top1"] if monitored else []
    write_tsv(root / "pretrain" / f"{name}.tsv", rows, ["epoch", "loss", *extra])


def make_runs() -> dict[str, RunConfig]:
    return {"supervised": run("supervised"), "simclr": run("simclr"),
            "simclr-s1": run("simclr", seed=1), "simclr-dsa": run("simclr", regulated=True),
            "simclr-dsa-s1": run("simclr", seed=1, regulated=True),
            "simclr-e5": run("simclr", epochs=5)}


# online linear top-1 at monitored epochs; supervised and the DSA runs were not monitored
MONITORED = {"simclr": {5: 0.4, 10: 0.58}, "simclr-s1": {5: 0.5, 10: 0.62},
             "simclr-e5": {2: 0.3, 5: 0.45}}


@pytest.fixture
def table(tmp_path: Path):
    runs = make_runs()
    accuracy = {"supervised": 0.9, "simclr": 0.6, "simclr-s1": 0.7, "simclr-dsa": 0.8,
                "simclr-dsa-s1": 0.8, "simclr-e5": 0.5}
    for name, value in accuracy.items():
        write_metrics(tmp_path, name, value)
        write_history(tmp_path / "plots", name, runs[name].train.epochs,
                      MONITORED.get(name, {}))
    return gap_closed(aggregate_seeds(run_rows(tmp_path, runs)))


@pytest.fixture
def curves(table, tmp_path: Path):
    runs = make_runs()
    return efficiency_curves(run_rows(tmp_path, runs), table,
                             monitored_history(tmp_path / "plots", runs))


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


def points(curves, curve: str) -> list[tuple]:
    chosen = curves.filter(curves["curve"] == curve)
    return list(zip(chosen["source"], chosen["epochs"], chosen["linear_top1_mean"],
                    chosen["linear_top1_std"], chosen["seeds"], strict=True))


def test_efficiency_curve_per_group_from_the_monitored_history(curves):
    # seeds 0 and 1: mean and sample std at each monitored epoch, then the final probe
    simclr = points(curves, "simclr (simclr)")
    assert [p[:2] for p in simclr] == [("online", 5), ("online", 10), ("probe", 10)]
    assert [p[2] for p in simclr] == pytest.approx([0.45, 0.60, 0.65])
    assert [p[3] for p in simclr] == pytest.approx([0.0707107, 0.0282843, 0.0707107],
                                                   rel=1e-5)
    assert [p[4] for p in simclr] == [2, 2, 2]
    # one seed: the run's own values, no spread claimed
    assert points(curves, "simclr (simclr-e5)") == [
        ("online", 2, pytest.approx(0.3), None, 1), ("online", 5, pytest.approx(0.45), None, 1),
        ("probe", 5, pytest.approx(0.5), None, 1)]
    # never monitored: the final probe only
    assert points(curves, "supervised (supervised)") == [("probe", 10, pytest.approx(0.9),
                                                          None, 1)]
    assert [p[0] for p in points(curves, "simclr+dsa (simclr-dsa)")] == ["probe"]
    # separately pretrained budgets of one config share `budgets`
    budgets = dict(zip(curves["curve"], curves["budgets"], strict=True))
    assert budgets["simclr (simclr-e5)"] == budgets["simclr (simclr)"] == "simclr (simclr)"


def test_efficiency_figure_draws_the_table(curves, tmp_path: Path):
    figure = efficiency_figure(curves, "digits")
    ax = figure.axes[0]
    drawn = {(c.get_label(), c.lines[0].get_marker(), tuple(c.lines[0].get_xdata()),
              tuple(round(y, 6) for y in c.lines[0].get_ydata())) for c in ax.containers}
    assert ("simclr (simclr)", "o", (5, 10), (0.45, 0.6)) in drawn
    assert any(marker == "*" and x == (10,) and y == (0.65,) for _, marker, x, y in drawn)
    assert ("supervised (supervised)", "*", (10,), (0.9,)) in drawn  # labelled: no line
    dashed = [(tuple(line.get_xdata()), tuple(round(y, 6) for y in line.get_ydata()))
              for line in ax.lines if line.get_linestyle() == "--"]
    assert dashed == [((5, 10), (0.5, 0.65))]  # the final points of the two simclr budgets
    save_efficiency_figure(curves, "digits", tmp_path / "efficiency.png")
    assert (tmp_path / "efficiency.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_history_names_the_file(tmp_path: Path):
    with pytest.raises(UserError, match=r"plots/pretrain/simclr.tsv: pretraining history "
                                        r"missing"):
        monitored_history(tmp_path / "plots", ["simclr"])


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


"""The report: per-seed rows through the typed contracts, means over seeds, gap closed,
paired comparisons with verdicts, efficiency curves and epochs to reach."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.io import write_json, write_tsv
from pipeline.params.schema import validate_params
from pipeline.report import (
    compare_runs,
    efficiency_curves,
    efficiency_figure,
    epochs_to_reach,
    monitored_history,
    run_rows,
    save_figure,
    summarise,
    summary_markdown,
    summary_metrics,
)
from pipeline.resolved.write import report_params

SEEDS = [0, 1, 2]
TEST_SIZE = 10_000  # accuracies resolve steps of 1e-4
# linear top-1 per seed: simclr_dsa beats simclr by 0.02 on every seed
ACCURACY = {"random": [0.50, 0.52, 0.51], "supervised": [0.90, 0.91, 0.92],
            "simclr": [0.70, 0.74, 0.72], "simclr_dsa": [0.72, 0.76, 0.74]}
MONITORED = {"supervised": {5: [0.8, 0.82, 0.84], 10: [0.9, 0.9, 0.9]},
             "simclr": {5: [0.6, 0.62, 0.64], 10: [0.7, 0.74, 0.72]},
             "simclr_dsa": {5: [0.8, 0.81, 0.82], 10: [0.8, 0.8, 0.8]}}


def make_params(**overrides):
    run = {"dataset": "digits", "backbone": {"name": "small_cnn"}, "train": {"epochs": 10}}
    data = {
        "datasets": {"digits": {"source": {"name": "digits"}}},
        "runs": {"random": {**run, "method": {"name": "random"}, "train": {"epochs": 0}},
                 "supervised": {**run, "method": {"name": "supervised"}},
                 "simclr": {**run, "method": {"name": "simclr"}},
                 "simclr_dsa": {**run, "method": {"name": "simclr"},
                                "regulator": {"name": "dsa"}}},
        "seeds": SEEDS,
        "report": {"control": ["random"], "supervised": ["supervised"],
                   "comparisons": [["simclr_dsa", "simclr"]]},
        **overrides,
    }
    return report_params(validate_params(data))


def probe(accuracy: float, ks=(20, 200), test_size: int = TEST_SIZE) -> dict:
    return {"linear_top1": accuracy, "linear_top5": 1.0, "linear_weight_decay": 1e-4,
            **{f"knn{k}_top1": accuracy - 0.05 for k in ks}, "majority5nn_top1": 0.5,
            "lowshot1pct_top1": 0.3, "lowshot10pct_top1": 0.4, "train_size": 100,
            "test_size": test_size, "num_classes": 7}


def geometry(accuracy: float) -> dict:
    names = ("intra_class_variance", "inter_class_distance", "min_inter_class_distance",
             "nc1", "effective_rank", "uniformity", "nearest_class_mean_accuracy",
             "silhouette", "alignment")
    return {**dict.fromkeys(names, 0.5), "crowding_index": 1.0 - accuracy}


def write_outputs(root: Path, name: str, accuracies: list[float], ks=(20, 200),
                  test_size: int = TEST_SIZE) -> None:
    per_stage = {
        "pretrain": lambda a: {"epochs": 10, "final_loss": 1.0, "train_seconds": 3.0,
                               "monitor_seconds": 0.5, "images_per_second": 100.0},
        "probe": lambda a: probe(a, ks, test_size),
        "geometry": geometry,
        "transfer": lambda a: {"digits_heldout": {"linear_top1": a - 0.1}},
    }
    for stage, make in per_stage.items():
        write_json(root / "metrics" / stage / f"{name}.json",
                   {f"seed_{s}": make(a) for s, a in zip(SEEDS, accuracies, strict=True)})
    for index, seed in enumerate(SEEDS):
        monitored = {e: values[index] for e, values in MONITORED.get(name, {}).items()}
        rows = [{"epoch": e, "loss": 1.0 / e,
                 **({"linear_top1": monitored[e]} if e in monitored else {})}
                for e in range(1, 11)]
        write_tsv(root / "plots" / "pretrain" / name / f"seed_{seed}.tsv", rows,
                  ["epoch", "loss", *(["linear_top1"] if monitored else [])])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name, accuracies in ACCURACY.items():
        write_outputs(tmp_path, name, accuracies)
    return tmp_path


def test_rows_per_seed_and_summary_over_seeds(project: Path):
    params = make_params()
    rows = run_rows(project / "metrics", params)
    assert rows.height == 4 * 3
    summary = {r["run"]: r for r in summarise(rows, params).iter_rows(named=True)}
    assert summary["simclr"]["seeds"] == 3
    assert summary["simclr"]["linear_top1_mean"] == pytest.approx(0.72)
    assert summary["simclr"]["linear_top1_std"] == pytest.approx(0.02)
    assert summary["simclr_dsa"]["method"] == "simclr+dsa"
    assert summary["simclr"]["transfer_digits_heldout_linear_top1_mean"] == pytest.approx(0.62)
    # gap closed: (0.74 - 0.51) / (0.91 - 0.51), the references named in params
    assert summary["simclr_dsa"]["gap_closed"] == pytest.approx(0.575)
    assert summary["random"]["gap_closed"] == pytest.approx(0.0)
    assert summary["supervised"]["gap_closed"] == pytest.approx(1.0)


def test_gap_closed_references_come_from_params(project: Path):
    params = make_params(report={"control": ["simclr"], "supervised": ["supervised"]})
    summary = {r["run"]: r for r in summarise(run_rows(project / "metrics", params),
                                              params).iter_rows(named=True)}
    assert summary["simclr_dsa"]["gap_closed"] == pytest.approx(0.02 / 0.19)
    no_references = make_params(report={})
    summary = summarise(run_rows(project / "metrics", no_references), no_references)
    assert summary["gap_closed"].null_count() == summary.height


def test_columns_follow_the_knn_params(tmp_path: Path):
    for name, accuracies in ACCURACY.items():
        write_outputs(tmp_path, name, accuracies, ks=(10, 50))
    params = make_params(evaluate={"knn": {"ks": [10, 50]}})
    rows = run_rows(tmp_path / "metrics", params)
    assert {"knn10_top1", "knn50_top1"} <= set(rows.columns)
    assert "knn20_top1" not in rows.columns
    comparisons = compare_runs(rows, params)
    assert "knn10_top1" in set(comparisons["metric"])
    # metrics written for other ks than the params ask for: an error naming the file
    with pytest.raises(UserError, match=r"metrics/probe/random.json: no knn20_top1"):
        run_rows(tmp_path / "metrics", make_params())


def test_paired_comparisons_and_verdicts(project: Path):
    params = make_params()
    comparisons = compare_runs(run_rows(project / "metrics", params), params)
    listed = {r["metric"]: r for r in comparisons.filter(comparisons["kind"] == "listed")
              .iter_rows(named=True)}
    assert listed["linear_top1"]["difference"] == pytest.approx(0.02)
    assert listed["linear_top1"]["verdict"] == "better"  # +0.02 on every seed
    # crowding = 1 - accuracy: lower is better, so DSA's lower crowding is better too
    assert listed["crowding_index"]["difference"] == pytest.approx(-0.02)
    assert listed["crowding_index"]["verdict"] == "better"
    assert listed["nc1"]["verdict"] == "no detectable difference"
    against = comparisons.filter((comparisons["metric"] == "linear_top1")
                                 & (comparisons["run"] == "simclr"))
    assert dict(zip(against["kind"], against["verdict"], strict=True)) == {
        "vs control": "better", "vs supervised": "worse"}
    # the control is compared only as the supervised run's baseline
    assert "random" not in set(comparisons["run"])
    assert set(comparisons.filter(comparisons["run"] == "supervised")["kind"]) == {"vs control"}


def test_a_difference_of_one_test_image_per_seed_is_not_a_verdict(tmp_path: Path):
    """Accuracies move in steps of 1/test_size: two seeds that differ by exactly one step
    each have zero spread, but their interval keeps the width of one step."""
    accuracy = {**ACCURACY, "simclr_dsa": [a + 0.01 for a in ACCURACY["simclr"]]}
    for name, values in accuracy.items():
        write_outputs(tmp_path, name, values, test_size=100)
    params = make_params()
    comparisons = compare_runs(run_rows(tmp_path / "metrics", params), params)
    [row] = comparisons.filter((comparisons["kind"] == "listed")
                               & (comparisons["metric"] == "linear_top1")).iter_rows(named=True)
    assert row["difference"] == pytest.approx(0.01)
    assert row["ci_low"] < 0 < row["ci_high"]  # +-t * 0.01 / sqrt(3)
    assert row["verdict"] == "no detectable difference"


def test_one_seed_reports_differences_without_verdicts(project: Path):
    params = make_params(seeds=[0], report={"control": ["random"],
                                            "supervised": ["supervised"]})
    comparisons = compare_runs(run_rows(project / "metrics", params), params)
    assert comparisons["ci_low"].null_count() == comparisons.height
    assert set(comparisons["verdict"]) == {"none (1 seed)"}


def test_efficiency_band_over_seeds_and_epochs_to_reach(project: Path):
    params = make_params()
    curves = efficiency_curves(monitored_history(project / "plots", params), params)
    simclr = curves.filter(curves["run"] == "simclr").sort("epoch")
    assert simclr["epoch"].to_list() == [5, 10]
    assert simclr["mean"].to_list() == pytest.approx([0.62, 0.72])
    assert simclr["min"].to_list() == pytest.approx([0.6, 0.7])
    assert simclr["max"].to_list() == pytest.approx([0.64, 0.74])
    assert simclr["seeds"].to_list() == [3, 3]
    reach = {r["run"]: r for r in epochs_to_reach(curves, params).iter_rows(named=True)}
    # target: 0.9 x the supervised run's final mean online accuracy 0.9 = 0.81
    assert reach["simclr_dsa"]["target_linear_top1"] == pytest.approx(0.81)
    assert reach["simclr_dsa"]["epochs"] == 5
    assert reach["simclr"]["epochs"] is None  # never reached within its 10 epochs
    assert "random" not in reach  # never monitored


def test_figures_and_markdown(project: Path, tmp_path: Path):
    params = make_params()
    rows = run_rows(project / "metrics", params)
    summary, comparisons = summarise(rows, params), compare_runs(rows, params)
    curves = efficiency_curves(monitored_history(project / "plots", params), params)
    figure = efficiency_figure(curves, "digits")
    drawn = {line.get_label(): list(line.get_ydata()) for line in figure.axes[0].lines}
    assert drawn["simclr (3 seeds)"] == pytest.approx([0.62, 0.72])
    save_figure(figure, tmp_path / "efficiency.png")
    assert (tmp_path / "efficiency.png").read_bytes()[:4] == b"\x89PNG"
    markdown = summary_markdown(summary, comparisons, epochs_to_reach(curves, params), params,
                                {"digits": ["figures/efficiency_digits.png"]})
    assert "## digits" in markdown and "0.72 ± 0.02" in markdown
    assert "| simclr_dsa vs simclr | linear_top1 | 0.0200 | [0.0198, 0.0202] | 3 | better |" \
        in markdown
    assert "![efficiency_digits](figures/efficiency_digits.png)" in markdown
    metrics = summary_metrics(summary)
    assert metrics["digits"]["simclr_dsa"]["gap_closed"] == pytest.approx(0.575)


def test_bad_metrics_files_are_named(project: Path):
    params = make_params()
    path = project / "metrics" / "probe" / "simclr.json"
    path.write_text(json.dumps({"seed_0": probe(0.7), "seed_1": probe(0.7)}))
    with pytest.raises(UserError, match=r"probe/simclr.json: no metrics for seed 2"):
        run_rows(project / "metrics", params)
    path.write_text(json.dumps({f"seed_{s}": {"linear_top1": "high"} for s in SEEDS}))
    with pytest.raises(UserError, match=r"probe/simclr.json: seed_0.linear_top1: "):
        run_rows(project / "metrics", params)
    path.write_text("{not json")
    with pytest.raises(UserError, match=r"probe/simclr.json: not valid JSON"):
        run_rows(project / "metrics", params)
    path.unlink()
    with pytest.raises(UserError, match=r"probe/simclr.json: metrics file missing"):
        run_rows(project / "metrics", params)


def test_missing_history_names_the_file(project: Path):
    (project / "plots" / "pretrain" / "simclr" / "seed_1.tsv").unlink()
    with pytest.raises(UserError, match=r"simclr/seed_1.tsv: pretraining history missing"):
        monitored_history(project / "plots", make_params())


def test_a_reach_target_the_control_already_meets_is_flagged(project: Path):
    """0.5 x supervised's 0.9 = 0.45, below the untrained control's 0.51."""
    params_low = make_params(report={"control": ["random"], "supervised": ["supervised"],
                                     "comparisons": [], "reach_fraction": 0.5})
    markdowns = []
    for params in (make_params(), params_low):
        rows = run_rows(project / "metrics", params)
        curves = efficiency_curves(monitored_history(project / "plots", params), params)
        markdowns.append(summary_markdown(summarise(rows, params), compare_runs(rows, params),
                                          epochs_to_reach(curves, params), params, {}))
    flag = ("The untrained control `random` already scores 0.510 linear top-1, at or above "
            "this target (0.450)")
    assert flag not in markdowns[0] and flag in markdowns[1]

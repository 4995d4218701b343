"""The report: per-seed rows through the typed contracts, means over seeds, gap closed,
paired comparisons with verdicts, efficiency curves and epochs to reach."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pipeline.errors import UserError
from pipeline.io import write_json, write_tsv
from pipeline.params.schema import validate_params
from pipeline.report import (
    Analysis,
    adjust_for_multiplicity,
    analyse,
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
    write_report,
)
from pipeline.resolved.write import report_params

SEEDS = [0, 1, 2]
TEST_SIZE = 10_000  # accuracies resolve steps of 1e-4
# linear top-1 per seed: simclr_dsa beats simclr by 0.02 on every seed
ACCURACY = {"random": [0.50, 0.52, 0.51], "supervised": [0.90, 0.91, 0.92],
            "simclr": [0.70, 0.74, 0.72], "simclr_dsa": [0.72, 0.76, 0.74]}
# online linear top-1 per epoch and seed; the reach target is 0.9 x 0.9 = 0.81
MONITORED = {"supervised": {4: [0.8, 0.82, 0.84], 7: [0.88, 0.88, 0.88], 10: [0.9, 0.9, 0.9]},
             "simclr": {4: [0.6, 0.62, 0.64], 7: [0.7, 0.7, 0.7], 10: [0.7, 0.74, 0.72]},
             # seed 0 crosses at 4, dips below at 7, stays above from 10
             "simclr_dsa": {4: [0.82, 0.80, 0.83], 7: [0.80, 0.82, 0.82],
                            10: [0.82, 0.83, 0.84]}}


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


def test_efficiency_band_over_seeds_and_stable_epochs_to_reach(project: Path):
    params = make_params()
    history = monitored_history(project / "plots", params)
    curves = efficiency_curves(history, params)
    simclr = curves.filter(curves["run"] == "simclr").sort("epoch")
    assert simclr["epoch"].to_list() == [4, 7, 10]
    assert simclr["mean"].to_list() == pytest.approx([0.62, 0.7, 0.72])
    assert simclr["min"].to_list() == pytest.approx([0.6, 0.7, 0.7])
    assert simclr["max"].to_list() == pytest.approx([0.64, 0.7, 0.74])
    assert simclr["seeds"].to_list() == [3, 3, 3]
    reach = epochs_to_reach(curves, history, params)
    by_curve = {(r["run"], r["seed"]): r["epochs"] for r in reach.iter_rows(named=True)}
    # target: 0.9 x the supervised run's final mean online accuracy 0.9 = 0.81
    assert reach["target_linear_top1"].to_list() == pytest.approx([0.81] * reach.height)
    # mean curve 0.817, 0.813, 0.83: above from 4; seed 0 dips at 7, so it reaches at 10
    assert [by_curve["simclr_dsa", s] for s in (None, 0, 1, 2)] == [4, 10, 7, 4]
    assert [by_curve["supervised", s] for s in (None, 0, 1, 2)] == [4, 7, 4, 4]
    assert by_curve["simclr", None] is None  # never reached within its 10 epochs
    assert ("random", None) not in by_curve  # never monitored
    # without per-seed curves (a report rebuilt from its tables) only the mean curve
    assert epochs_to_reach(curves, None, params)["seed"].null_count() == 3


def test_reach_compared_by_seed_and_not_reached_is_undefined(project: Path):
    params = make_params(report={"control": ["random"], "supervised": ["supervised"],
                                 "comparisons": [["simclr_dsa", "supervised"],
                                                 ["simclr_dsa", "simclr"]]})
    history = monitored_history(project / "plots", params)
    analysis = analyse(run_rows(project / "metrics", params),
                       efficiency_curves(history, params), history, params)
    reach = {r["baseline"]: r for r in analysis.comparisons.filter(
        pl.col("metric") == "reach_epochs").iter_rows(named=True)}
    # per seed (10, 7, 4) - (7, 4, 4) = (3, 3, 0): sd sqrt(3), floored at the monitoring
    # interval of 3 epochs
    expected = stats.ttest_1samp([3.0, 3.0, 0.0], 0.0)
    half = stats.t.ppf(0.975, 2) * 3.0 / np.sqrt(3)
    row = reach["supervised"]
    assert row["difference"] == pytest.approx(2.0)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((2.0 - half, 2.0 + half))
    assert row["direction"] == "lower is better"
    assert row["verdict"] == "no detectable difference"
    assert row["p_value"] > expected.pvalue  # the floor widens it
    assert reach["simclr"]["verdict"] == \
        "undefined (simclr seed 0 does not reach the target within 10 epochs)"
    assert reach["simclr"]["p_holm"] is None


def analysed(project: Path, params) -> Analysis:
    history = monitored_history(project / "plots", params)
    return analyse(run_rows(project / "metrics", params), efficiency_curves(history, params),
                   history, params)


def test_figures_and_markdown(project: Path, tmp_path: Path):
    params = make_params()
    analysis = analysed(project, params)
    figure = efficiency_figure(analysis.curves, "digits")
    drawn = {line.get_label(): list(line.get_ydata()) for line in figure.axes[0].lines}
    assert drawn["simclr (3 seeds)"] == pytest.approx([0.62, 0.7, 0.72])
    save_figure(figure, tmp_path / "efficiency.png")
    assert (tmp_path / "efficiency.png").read_bytes()[:4] == b"\x89PNG"
    out = tmp_path / "report"
    markdown = write_report(out, analysis, params)
    assert (out / "summary.md").read_text() == markdown
    assert (out / "figures" / "efficiency_digits.png").read_bytes()[:4] == b"\x89PNG"
    for table in ("runs", "summary", "comparisons", "efficiency", "curves", "reach",
                  "monitors"):
        assert pl.read_csv(out / f"{table}.csv").height > 0
    assert "## digits" in markdown and "0.72 ± 0.02" in markdown
    assert "| simclr_dsa vs simclr | linear_top1 | 0.0200 | [0.0198, 0.0202] | 3 | 0.0000 | " \
        "better | 0.0000 | better |" in markdown
    assert "![efficiency_digits](figures/efficiency_digits.png)" in markdown
    assert "### In plain words" in markdown and "### Monitor validity" in markdown
    metrics = summary_metrics(analysis.summary)
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
        analysis = analysed(project, params)
        markdowns.append(summary_markdown(analysis.summary, analysis.comparisons,
                                          analysis.reach, params, {}))
    flag = ("The untrained control `random` already scores 0.510 linear top-1, at or above "
            "this target (0.450)")
    assert flag not in markdowns[0] and flag in markdowns[1]


def test_runs_are_paired_by_the_seed_column_not_by_position(project: Path):
    params = make_params()
    rows = run_rows(project / "metrics", params)
    # simclr's rows in reverse seed order: a positional pairing would pair 0.74 with 0.72
    shuffled = pl.concat([rows.filter(pl.col("run") != "simclr"),
                          rows.filter(pl.col("run") == "simclr").reverse()])
    for frame in (rows, shuffled):
        [row] = compare_runs(frame, params).filter(
            (pl.col("kind") == "listed") & (pl.col("metric") == "linear_top1")).iter_rows(
            named=True)
        assert row["difference"] == pytest.approx(0.02)
        assert row["ci_high"] - row["ci_low"] < 1e-3  # +0.02 on every seed
    # a seed one run lacks makes the comparison undefined, never a verdict
    missing = rows.filter((pl.col("run") != "simclr") | (pl.col("seed") != 1))
    listed = compare_runs(missing, params).filter(pl.col("kind") == "listed")
    assert set(listed["verdict"]) == {"undefined (simclr has no seed 1)"}


def test_a_nan_metric_is_undefined_and_left_out_of_holms_family(project: Path):
    params = make_params()
    rows = run_rows(project / "metrics", params).with_columns(
        pl.when((pl.col("run") == "simclr_dsa") & (pl.col("seed") == 2))
        .then(float("nan")).otherwise(pl.col("nc1")).alias("nc1"))
    comparisons = adjust_for_multiplicity(compare_runs(rows, params), 0.05)
    nc1 = comparisons.filter((pl.col("metric") == "nc1") & (pl.col("run") == "simclr_dsa"))
    assert set(nc1["verdict"]) == {"undefined (simclr_dsa seed 2: nc1 is nan)"}
    assert set(nc1["verdict_holm"]) == set(nc1["verdict"])
    assert nc1["difference"].null_count() == nc1["p_holm"].null_count() == nc1.height
    listed = comparisons.filter(pl.col("kind") == "listed")
    assert set(listed["family_size"]) == {3}  # linear, kNN, crowding: nc1 is not tested


def test_holm_runs_over_each_family_of_the_report(project: Path):
    params = make_params()
    comparisons = adjust_for_multiplicity(
        compare_runs(run_rows(project / "metrics", params), params), 0.05)
    for family, kind in (("claims", pl.col("kind") == "listed"),
                         ("references", pl.col("kind") != "listed")):
        members = comparisons.filter(kind)
        assert set(members["family"]) == {family}
        tested = members.filter(pl.col("p_value").is_not_null())
        p = tested["p_value"].to_numpy()
        # Holm by its definition: max over the j smaller-or-equal of (m - rank_j) p_(j)
        order = np.argsort(p, kind="stable")
        scaled = np.minimum(1, (len(p) - np.arange(len(p))) * p[order])
        expected = np.empty_like(p)
        expected[order] = np.maximum.accumulate(scaled)
        assert tested["p_holm"].to_numpy() == pytest.approx(expected)
        assert set(members["family_size"]) == {len(p)}
        # an adjusted verdict is never more decisive than the raw one
        for raw, adjusted in zip(members["verdict"], members["verdict_holm"], strict=True):
            assert adjusted in (raw, "no detectable difference")

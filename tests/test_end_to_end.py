"""The real pipeline: `dvc repro` in temporary git repositories copied from this one.

- A seeded study (4 runs x 2 seeds on digits, one epoch) through `dvc repro`: every output,
  verdict rows in the report, then `dvc exp run -S` on one run reruns exactly that run's
  seeds, and adding a dataset leaves every run's stages up to date.
- A minimal params.yaml (only the keys without defaults) through `dvc repro`.
The training stages join the test session's Ray cluster by address.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDY_RUNS = ("random", "supervised", "simclr", "simclr_dsa")
SEEDS = [0, 1]


def sh(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
              for what, value in (("NAME", "e2e"), ("EMAIL", "e2e@localhost"))}}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def new_project(root: Path, params: dict) -> Path:
    """A git repository with this project's tracked files and `params` as params.yaml.

    Without `studies/`: its pipelines would make every DVC command here read them."""
    repo = root / "project"
    files = sh(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT)
    for name in files.stdout.split():
        if (ROOT / name).is_file() and name != "dvc.lock" and not name.startswith("studies/"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    write_params(repo, params)
    sh(["git", "init", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "init"], repo)
    return repo


def write_params(repo: Path, params: dict) -> None:
    text = yaml.safe_dump(json.loads(json.dumps(params)), sort_keys=False)  # no aliases
    (repo / "params.yaml").write_text(text)


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_cluster) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["runs"] = {name: params["runs"][name] for name in STUDY_RUNS}
    for run in params["runs"].values():
        if run["train"]["epochs"] > 0:
            run["train"].update(epochs=1, monitor={"every_epochs": 1})
    params["seeds"] = SEEDS
    params["report"]["comparisons"] = [["simclr_dsa", "simclr"]]
    params["ray"]["address"] = ray_cluster.get_runtime_context().gcs_address
    repo = new_project(tmp_path_factory.mktemp("study"), params)
    sh(["dvc", "repro"], repo)
    return repo


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_repro_writes_every_output_per_seed(study: Path):
    assert read_json(study / "data/shards/digits/manifest.json")["total"] == 1797
    for run in STUDY_RUNS:
        probe = read_json(study / f"results/probe/{run}.json")
        assert list(probe) == ["seed_0", "seed_1"]
        for seed in SEEDS:
            assert (study / f"models/{run}/seed_{seed}/encoder.pt").stat().st_size > 0
            transfer = read_json(study / f"results/transfer/{run}.json")[f"seed_{seed}"]
            for metrics in (probe[f"seed_{seed}"], transfer["digits_heldout"]):
                assert 0.0 <= metrics["linear_top1"] <= 1.0
            geometry = read_json(study / f"results/geometry/{run}.json")[f"seed_{seed}"]
            assert geometry["crowding_index"] > 0 and geometry["effective_rank"] >= 1
        for figure in ("map.png", "similarity.png"):
            assert (study / f"plots/geometry/{run}/{figure}").read_bytes()[:4] == b"\x89PNG"
    # seeds differ: the same run's two seeds are different encoders
    simclr = read_json(study / "results/probe/simclr.json")
    assert simclr["seed_0"] != simclr["seed_1"]
    history = (study / "plots/pretrain/simclr/seed_1.tsv").read_text().splitlines()
    assert history[0].split("\t")[:2] == ["epoch", "loss"] and len(history) == 2
    with (study / "reports/runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["run"], row["seed"]) for row in rows] == [
        (run, str(seed)) for run in STUDY_RUNS for seed in SEEDS]


def test_report_has_verdict_rows(study: Path):
    with (study / "reports/comparisons.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    listed = {row["metric"]: row for row in rows if row["kind"] == "listed"}
    assert set(listed) == {"linear_top1", "knn20_top1", "crowding_index", "nc1",
                           "reach_epochs"}
    verdicts = ("better", "worse", "no detectable difference")
    reach = listed.pop("reach_epochs")  # undefined when a seed never reaches the target
    assert reach["verdict"] in verdicts or reach["verdict"].startswith("undefined (")
    for row in listed.values():
        assert (row["run"], row["baseline"], row["seeds"]) == ("simclr_dsa", "simclr", "2")
        assert float(row["ci_low"]) <= float(row["difference"]) <= float(row["ci_high"])
        assert row["verdict"] in verdicts and row["verdict_holm"] in verdicts
    summary = (study / "reports/summary.md").read_text()
    assert "| simclr_dsa vs simclr | linear_top1 |" in summary
    assert set(read_json(study / "metrics/summary.json")) == {"digits"}


def test_metrics_and_plots_are_visible_to_dvc(study: Path):
    shown = json.loads(sh(["dvc", "metrics", "show", "--json"], study).stdout)
    files = next(iter(shown.values()))["data"]
    for stage in ("probe", "geometry"):
        for run in STUDY_RUNS:
            assert f"metrics/{stage}/{run}.json" in files
    assert not [name for name in files if "transfer" in name or "pretrain" in name]
    headline = {"probe": {"linear_top1", "knn20_top1"},
                "geometry": {"crowding_index", "nc1", "rankme"}}
    for name, values in files.items():  # headlines only: per seed and the mean, no timings
        stage = name.split("/")[1]
        if stage in headline:
            assert {k: set(v) for k, v in values["data"].items()} == {
                key: headline[stage] for key in ("seed_0", "seed_1", "mean")}, name
    for target in ("metrics/probe", "metrics/geometry", "metrics/summary.json"):
        table = sh(["dvc", "metrics", "show", target], study).stdout  # the README's recipe
        assert max(map(len, table.splitlines())) <= 200, table
    sh(["dvc", "plots", "show", "-o", "plots_html"], study)
    html = (study / "plots_html/index.html").read_text()
    assert "pretrain" in html and "map.png" in html


EXP_SHOW = ["dvc", "exp", "show", "--only-changed", "--drop", "Created|.*/"]  # README


def exp_show_table(repo: Path) -> str:
    """The README's `dvc exp show` at its natural width (as its pager shows it: no column
    squeezed to the terminal)."""
    done = subprocess.run([*EXP_SHOW, "--no-pager"], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "1024",
                               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_exp_run_on_one_run_reruns_exactly_its_seeds(study: Path):
    assert "Data and pipelines are up to date" in sh(["dvc", "repro"], study).stdout
    sh(["git", "add", "-A"], study)
    sh(["git", "commit", "-qm", "study"], study)
    done = sh(["dvc", "exp", "run", "-S", "runs.simclr.train.epochs=2"], study)
    assert ran_stages(done.stdout) == {"params", "pretrain@simclr", "features@simclr",
                                       "probe@simclr", "transfer@simclr", "geometry@simclr",
                                       "report"}
    pretrain = read_json(study / "results/pretrain/simclr.json")
    assert [pretrain[f"seed_{s}"]["epochs"] for s in SEEDS] == [2, 2]
    assert read_json(study / "results/pretrain/simclr_dsa.json")["seed_0"]["epochs"] == 1
    table = exp_show_table(study)  # the README's recipe: changed params, changed gaps
    header = next(line for line in table.splitlines() if "Experiment" in line).split()
    assert header[0] == "Experiment" and "digits.simclr.gap_closed" in header, table
    assert len([name for name in header if name.endswith("runs.simclr.train.epochs")]) == 1
    assert max(map(len, table.splitlines())) <= 200, table
    diff = json.loads(sh(["dvc", "metrics", "diff", "--json"], study).stdout)
    assert "metrics/probe/simclr.json" in diff and "metrics/probe/simclr_dsa.json" not in diff
    assert "mean.linear_top1" in diff["metrics/probe/simclr.json"]


def test_adding_a_dataset_leaves_every_run_up_to_date(study: Path):
    params = yaml.safe_load((study / "params.yaml").read_text())
    params["datasets"]["digits_again"] = {"source": {"name": "digits"},
                                          "split": {"seed": 1}}
    write_params(study, params)
    done = sh(["dvc", "repro", "publish@digits_again"], study)  # the dataset's own stages
    assert ran_stages(done.stdout) == {"params", "shard@digits_again", "publish@digits_again"}
    status = json.loads(sh(["dvc", "status", "--json", "dvc.yaml"], study).stdout)  # not studies/
    assert status == {}, status


def test_bad_params_stop_with_the_yaml_path(study: Path):
    result = sh(["dvc", "exp", "run", "-S", "runs.simclr.train.batch_size=-1"], study,
                check=False)
    assert result.returncode != 0
    assert "params.yaml: runs.simclr.train.batch_size: must be > 0" in result.stderr + result.stdout


def test_minimal_params_run_with_every_default(tmp_path: Path):
    """One dataset and one run with only the keys that have no default: every section
    (seeds, ray, evaluate, report) and every optional key is left out."""
    minimal = {"datasets": {"digits": {"source": {"name": "digits"}}},
               "runs": {"untrained": {"dataset": "digits", "backbone": {"name": "small_cnn"},
                                      "method": {"name": "random"}}}}
    repo = new_project(tmp_path, minimal)
    done = sh(["dvc", "repro"], repo)
    assert {"params", "shard@digits", "pretrain@untrained", "report"} <= ran_stages(done.stdout)
    headline = read_json(repo / "metrics/probe/untrained.json")
    assert 0.0 < headline["mean"]["linear_top1"] == headline["seed_0"]["linear_top1"] <= 1.0
    assert read_json(repo / "metrics/summary.json") == {}  # no supervised run: no gap

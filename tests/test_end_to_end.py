"""The real pipeline: `dvc repro` in a temporary git repository copied from this one.

The stages join the test session's Ray cluster by address (so Ray starts once per
session) and train for a couple of epochs; everything else is the default params.yaml.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNS = tuple(yaml.safe_load((ROOT / "params.yaml").read_text())["runs"])


def sh(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
              for what, value in (("NAME", "e2e"), ("EMAIL", "e2e@localhost"))}}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory, ray_cluster) -> Path:
    """A git repository holding this project's tracked files, with short training."""
    repo = tmp_path_factory.mktemp("e2e") / "project"
    files = sh(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT)
    for name in files.stdout.split():
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for run in params["runs"].values():
        if run["train"]["epochs"] > 0:
            run["train"]["epochs"] = 2
    params["ray"]["address"] = ray_cluster.get_runtime_context().gcs_address
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "init"], repo)
    sh(["dvc", "repro"], repo)
    return repo


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_repro_writes_every_output(project):
    manifest = read_json(project / "data/shards/digits/manifest.json")
    assert manifest["total"] == 1797
    for run in RUNS:
        assert (project / f"models/{run}/encoder.pt").stat().st_size > 0
        probe = read_json(project / f"metrics/probe/{run}.json")
        transfer = read_json(project / f"metrics/transfer/{run}.json")["digits_heldout"]
        for metrics in (probe, transfer):
            assert 0.0 <= metrics["linear_top1"] <= 1.0
            assert 0.0 <= metrics["knn20_top1"] <= 1.0
        geometry = read_json(project / f"metrics/geometry/{run}.json")
        assert geometry["crowding_index"] > 0 and geometry["effective_rank"] >= 1
        for figure in ("map.png", "similarity.png"):
            assert (project / f"plots/geometry/{run}/{figure}").read_bytes()[:4] == b"\x89PNG"
    history = (project / "plots/pretrain/simclr.tsv").read_text().splitlines()
    assert history[0].split("\t")[:2] == ["epoch", "loss"] and len(history) == 3
    with (project / "reports/runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == list(RUNS)
    assert set(read_json(project / "metrics/summary.json")) == {"digits"}


def test_metrics_and_plots_are_visible_to_dvc(project):
    shown = json.loads(sh(["dvc", "metrics", "show", "--json"], project).stdout)
    files = next(iter(shown.values()))["data"]
    for stage in ("probe", "transfer", "geometry"):
        for run in RUNS:
            assert f"metrics/{stage}/{run}.json" in files
    sh(["dvc", "plots", "show", "-o", "plots_html"], project)
    html = (project / "plots_html/index.html").read_text()
    assert "pretrain" in html and "map.png" in html


def test_second_repro_does_nothing_and_one_run_change_reruns_only_that_run(project):
    assert "Data and pipelines are up to date" in sh(["dvc", "repro"], project).stdout
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runs"]["simclr"]["method"]["temperature"] = 0.3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(sh(["dvc", "status", "--json"], project).stdout)
    changed = {name.split(":")[-1] for name in status}
    # Stages downstream of the encoder show up once the encoder itself has changed.
    assert changed == {"pretrain@simclr", "features@simclr", "transfer@simclr",
                       "geometry@simclr", "report"}


def test_bad_params_stop_with_the_yaml_path(project):
    result = sh(["dvc", "exp", "run", "-S", "runs.simclr.train.batch_size=-1"], project,
                check=False)
    assert result.returncode != 0
    assert "params.yaml: runs.simclr.train.batch_size: must be > 0" in result.stderr + result.stdout

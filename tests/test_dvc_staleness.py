"""An edit reruns only the stages that compute with what it changed, as DVC itself sees it.

A small DVC project (this repository's dvc.yaml and code, and a one-run params.yaml) gets
a dvc.lock from `dvc commit` over placeholder outputs; then each module of the table is
edited in turn and DVC's stage status (what `dvc status` prints) says which stages are
stale. A stale stage reruns under `dvc repro`, and so does everything downstream of it
(DVC's graph), except behind `params`: its outputs are one file per stage, and a stage
reruns after it only if its own file changed (an edit of the schema's code changes none
by itself). The table lists both. No evaluation-side or report-side edit may reach a
`pretrain@` stage: on a GPU cluster that would retrain every encoder.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUN = "simclr"
PIPELINE = ("params", "shard", "publish", "pretrain", "features", "probe", "transfer",
            "geometry", "report")
EVALUATION = ("features", "probe", "transfer", "geometry", "report")


def every(*stages: str) -> set[str]:
    """Stage names: `probe` stands for every `probe@<run>`."""
    per_dataset = {"shard", "publish"}
    return {stage if stage in ("params", "report") else
            f"{stage}@{'digits' if stage in per_dataset else RUN}" for stage in stages}


# module edited -> every stage `dvc repro` would then rerun (stale, or downstream of one)
TABLE = {
    "pipeline/report.py": every("report"),
    "pipeline/stats.py": every("report"),
    "pipeline/claims.py": every("report"),
    "pipeline/params/report.py": every("params", "report"),
    "pipeline/resolved/report.py": every("params", "report"),
    "pipeline/metrics/geometry.py": every("geometry", "report"),
    "pipeline/evaluate/geometry.py": every("geometry", "report"),
    "pipeline/evaluate/spectrum.py": every("geometry", "report"),
    "pipeline/evaluate/probe.py": every("probe", "transfer", "report"),
    "pipeline/metrics/probe.py": every("probe", "transfer", "report"),
    "pipeline/evaluate/finetune.py": every("transfer", "report"),
    "pipeline/metrics/transfer.py": every("transfer", "report"),
    "pipeline/metrics/pretrain.py": every("pretrain", *EVALUATION),
    "pipeline/params/evaluation.py": every("params", "probe", "transfer", "geometry", "report"),
    "pipeline/evaluate/features.py": every(*EVALUATION),
    "pipeline/resolved/write.py": every("params"),
    "pipeline/train/monitor.py": every("pretrain", *EVALUATION),
    "pipeline/classify.py": every("pretrain", "probe", "transfer", "report", "features",
                                  "geometry"),
    "pipeline/params/ray.py": every(*PIPELINE),  # where shard@, pretrain@, features@ run
    "pipeline/data/sources/digits.py": every(*PIPELINE[1:]),
}
EVALUATION_SIDE = [module for module in TABLE if module.startswith((
    "pipeline/report.py", "pipeline/stats.py", "pipeline/evaluate/", "pipeline/metrics/probe",
    "pipeline/metrics/geometry", "pipeline/params/report", "pipeline/params/evaluation",
    "pipeline/resolved/report", "pipeline/resolved/write"))]


def placeholders(repo) -> None:
    """Every data dep and output of every stage, as a small file (outputs named like a
    file) or a directory holding one."""
    paths = {Path(item.fs_path) for stage in repo.index.stages
             for item in (*stage.deps, *stage.outs)}
    for path in sorted(paths, key=lambda p: p.suffix == ""):
        if path.exists():
            continue
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n")
        else:
            path.mkdir(parents=True)
            (path / "placeholder").write_text("x\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A DVC project whose dvc.lock matches its code and placeholder outputs."""
    from dvc.repo import Repo

    project = tmp_path_factory.mktemp("staleness")
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, project / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["runs"] = {RUN: params["runs"][RUN]}
    params["report"] = {}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with contextlib.chdir(project):  # DVC resolves the stages' paths from the cwd
        Repo.init(".", no_scm=True).close()
        repo = Repo(str(project))
        placeholders(repo)
        repo.commit(None, force=True)
        assert repo.status() == {}
        index = repo.index  # parsed once: each check then hashes the deps only
    yield project, repo, index
    repo.close()


def stale_and_downstream(repo, index) -> set[str]:
    """The stages whose deps changed, and every stage downstream of one (not of `params`)."""
    import networkx as nx

    with contextlib.chdir(repo.root_dir), repo.lock:  # DVC resolves paths from the cwd
        stale = {stage for stage in index.stages if stage.changed_deps()}
    graph = index.graph  # an edge A -> B: A depends on B
    downstream = {above for stage in stale if stage.name != "params"
                  for above in nx.ancestors(graph, stage)}
    return {stage.name for stage in stale | downstream}


@pytest.mark.parametrize("module", list(TABLE))
def test_an_edit_reruns_what_computes_with_it(project, module: str):
    root, repo, index = project
    path = root / module
    original = path.read_text()
    path.write_text(original + "# an edit\n")
    try:
        marked = stale_and_downstream(repo, index)
    finally:
        path.write_text(original)
    assert marked == TABLE[module]


def test_no_evaluation_or_report_edit_reaches_pretraining():
    assert len(EVALUATION_SIDE) >= 10
    for module in EVALUATION_SIDE:
        assert not {name for name in TABLE[module] if name.startswith("pretrain@")}, module

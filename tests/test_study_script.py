"""scripts/study.py: studies are DVC pipelines of their own under studies/<name>/.

- A bad study stops before anything runs (one line, exit 2, nothing written).
- Every committed study's dvc.yaml is the one generated from the root dvc.yaml.
- A real study in a copy of the repository: Ctrl-C (SIGINT to the process group) during
  pretraining prints one line, leaves the workspace's files, the interrupted stage's
  outputs and no Ray process behind; run again, it finishes, its results are under
  studies/<name>/ and DVC compares them from the root.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = "seeds: [0]\n"  # the workspace's params.yaml, which a failed study must not touch

STUDY = """
datasets:
  digits: {source: {name: digits}}
seeds: [0, 1]
runs:
  random: {dataset: digits, backbone: {name: small_cnn}, method: {name: random},
           train: {epochs: 0}}
  simclr: {dataset: digits, backbone: {name: small_cnn}, method: {name: simclr}}
report: {control: [random], comparisons: [[simclr, random]]}
"""


def run_study(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    """The real script, in a copy of the repository's scripts/ and pipeline/."""
    for folder in ("scripts", "pipeline"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "params.yaml").write_text(DEFAULT)
    (tmp_path / "studies" / "bad").mkdir(parents=True)
    (tmp_path / "studies" / "bad" / "params.yaml").write_text(text)
    return subprocess.run([sys.executable, "scripts/study.py", "bad"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("edit", "line"), [
    (("  simclr: {dataset: digits", "  simclr: {dataset: cifar"),
     "runs.simclr.dataset: unknown dataset 'cifar' (defined in datasets: digits)"),
    (("method: {name: simclr}", "method: {name: simclr2}"),
     "runs.simclr.method.name: unknown name 'simclr2', expected one of "),
    (("seeds: [0, 1]", "seeds: [0]"),
     "report.comparisons: a verdict needs at least 2 seeds, seeds has 1"),
])
def test_a_bad_study_is_one_line_and_writes_nothing(tmp_path: Path, edit: tuple[str, str],
                                                     line: str):
    done = run_study(tmp_path, STUDY.replace(*edit, 1))
    assert done.returncode == 2, done.stderr
    [printed] = done.stderr.strip().splitlines()
    assert printed.startswith(f"{tmp_path / 'studies/bad/params.yaml'}: {line}"), printed
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert (tmp_path / "params.yaml").read_text() == DEFAULT
    assert sorted(p.name for p in (tmp_path / "studies" / "bad").iterdir()) == ["params.yaml"]
    assert not (tmp_path / "reports").exists()


def test_an_unknown_study_names_the_ones_there_are(tmp_path: Path):
    run_study(tmp_path, STUDY)
    done = subprocess.run([sys.executable, "scripts/study.py", "nope"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: studies/nope/params.yaml: no such study (studies: bad)"


def study_module():
    spec = importlib.util.spec_from_file_location("study", ROOT / "scripts" / "study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_study_pipeline_is_generated_from_the_root_one():
    study = study_module()
    expected = study.study_pipeline_text()
    studies = sorted(p.parent for p in (ROOT / "studies").glob("*/params.yaml"))
    assert studies
    for folder in studies:  # stale: `python scripts/study.py --sync`
        assert (folder / "dvc.yaml").read_text() == expected, folder.name
    assert "- ../../stages/pretrain.py" in expected and "- models/${key}" in expected


TINY = """
datasets:
  digits: {source: {name: digits}, split: {heldout_classes: [7, 8, 9]}}
seeds: [0]
runs:
  random: {dataset: digits, backbone: {name: small_cnn, width: 8}, method: {name: random},
           train: {epochs: 0}}
  simclr: {dataset: digits, backbone: {name: small_cnn, width: 8}, method: {name: simclr},
           train: {epochs: 30, batch_size: 256, monitor: {every_epochs: 30}}}
report: {control: [random]}
ray: {cpus_per_worker: 1}
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                            for what, value in (("NAME", "t"), ("EMAIL", "t@localhost"))}}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository with this project's files, a workspace dvc.lock and a tiny study."""
    repo = tmp_path / "project"
    for name in git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard").split():
        if (ROOT / name).is_file() and not name.startswith("studies/"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / "studies" / "tiny").mkdir(parents=True)
    (repo / "studies" / "tiny" / "params.yaml").write_text(TINY)
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # must stay as it is
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def changed(repo: Path) -> list[str]:
    """Paths git sees as changed or new, outside the study's own directory."""
    return [line for line in git(repo, "status", "--porcelain", "--untracked-files=all")
            .splitlines() if not line[3:].startswith("studies/tiny/")]


def study_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "SSL_PIPELINE_VENV": str(Path(sys.executable).parents[1]),
            "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}


def command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # gone (or a zombie) meanwhile
        return ""


def interrupt_during_pretraining(repo: Path) -> tuple[int, str, list[psutil.Process]]:
    """Run the study, SIGINT its process group at the first epoch line; exit code, what it
    printed after the signal, and every process it had started by then (a Ray cluster's
    among them)."""
    study = subprocess.Popen(["bash", "scripts/study.sh", "tiny"], cwd=repo, env=study_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    for line in study.stdout:
        if re.match(r"\[simclr\] epoch 1/", line):
            break
    else:
        raise AssertionError(f"no epoch line; exit {study.wait()}")
    started = psutil.Process(study.pid).children(recursive=True)
    assert any("raylet" in command_line(p) for p in started), [command_line(p) for p in started]
    os.killpg(study.pid, signal.SIGINT)
    after = study.stdout.read()
    return study.wait(timeout=120), after, started


@pytest.mark.slow
def test_a_study_runs_in_its_own_directory_and_ctrl_c_leaves_the_repository_as_it_was(
        project: Path):
    workspace = {name: (project / name).read_bytes() for name in ("params.yaml", "dvc.lock")}
    code, after, started = interrupt_during_pretraining(project)
    assert code == 130, after  # as a shell reports Ctrl-C
    printed = [text for text in after.splitlines()  # progress lines aside
               if text.strip() and not re.match(r"\[simclr\] epoch ", text)]
    assert len(printed) == 1, after
    [line] = printed
    assert line.startswith("ERROR: failed to reproduce 'studies/tiny/dvc.yaml:pretrain@simclr'")
    assert "Traceback" not in after
    psutil.wait_procs(started, timeout=30)
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert changed(project) == []
    assert {name: (project / name).read_bytes() for name in workspace} == workspace
    tiny = project / "studies" / "tiny"
    assert not (tiny / "models" / "simclr").exists()  # the interrupted stage wrote nothing
    assert "pretrain@simclr" not in (tiny / "dvc.lock").read_text()

    done = subprocess.run(["bash", "scripts/study.sh", "tiny"], cwd=project, env=study_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| simclr |" in done.stdout  # the study's summary, printed at the end
    assert (tiny / "models" / "simclr" / "seed_0" / "encoder.pt").is_file()
    assert json.loads((tiny / "run.json").read_text())["runs"] == 2
    assert changed(project) == []
    assert {name: (project / name).read_bytes() for name in workspace} == workspace
    venv_bin = {"PATH": study_env()["PATH"]}
    shown = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=project, text=True,
                           capture_output=True, env={**os.environ, **venv_bin}).stdout
    assert "studies/tiny/metrics/probe/simclr.json" in shown
    status = subprocess.run(["dvc", "status", "studies/tiny/dvc.yaml"], cwd=project,
                            text=True, capture_output=True, env={**os.environ, **venv_bin})
    assert "up to date" in status.stdout, status.stdout

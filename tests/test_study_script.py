"""scripts/study.py: a bad study stops before anything runs (one line, exit 2, nothing written)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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

"""Bring dvc.lock up to date with the code and params.yaml, without running the pipeline.

    python scripts/lock.py

dvc.lock is committed so that a fresh clone's `dvc status` reports no code file and no
params.yaml as modified (only missing outputs), and `dvc repro --allow-missing --dry`
says which stages an edit would rerun. `dvc repro` keeps it current as it runs; after an
edit of code you do not want to run here (or a merge), this script records the current
code and params.yaml in it instead, through DVC's own `commit`. It works on a copy of the
files git tracks, as a fresh clone has them (plus the `params` stage's resolved/, which
it writes in seconds): outputs in your workspace are never recorded as current, and
those the copy lacks keep the hashes of the run that made them.
tests/test_dvc_lock.py fails while dvc.lock is stale.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked_files(root: Path) -> list[str]:
    """What a fresh clone of the working tree would hold: tracked and new files."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=root, check=True, capture_output=True, text=True).stdout
    return [name for name in listed.splitlines() if (root / name).is_file()]


def fresh_copy(root: Path, target: Path) -> None:
    for name in tracked_files(root):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target / name)


def refresh_lock(project: Path) -> None:
    """Write the resolved params, then record every stage's current deps in dvc.lock."""
    from dvc.repo import Repo

    subprocess.run([sys.executable, "-m", "stages.params"], cwd=project, check=True,
                   stdout=subprocess.DEVNULL)
    with (contextlib.chdir(project),
          Repo(str(project), config={"core": {"no_scm": True}}) as repo, repo.lock):
        stages = list(repo.index.stages)
        for stage in stages:  # `dvc commit --force`, for inputs and outputs that exist
            # (no run-cache entry: DVC would hash the missing outputs of other stages)
            stage.save(allow_missing=True, run_cache=False)
        stages[0].dvcfile.dump_stages(stages, update_pipeline=False)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        fresh_copy(ROOT, project)
        refresh_lock(project)
        shutil.copyfile(project / "dvc.lock", ROOT / "dvc.lock")
    print("dvc.lock: current with the code and params.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())

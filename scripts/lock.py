"""Bring every dvc.lock up to date with the code and params, without running a pipeline.

    python scripts/lock.py

dvc.lock is committed so that a fresh clone's `dvc status` reports no code file and no
params.yaml as modified (only missing outputs), and `dvc repro --allow-missing --dry`
says which stages an edit would rerun. `dvc repro` keeps it current as it runs; after an
edit of code you do not want to run here (or a merge), this script records the current
code and params.yaml in it instead, through DVC's own `commit`. It works on a copy of the
files git tracks, as a fresh clone has them (plus the `params` stage's resolved/, which
it writes in seconds): outputs in your workspace are never recorded as current, and
those the copy lacks keep the hashes of the run that made them.
Each study (studies/<name>/, a pipeline of its own) has its dvc.lock refreshed the same way.
tests/test_dvc_lock.py fails while any dvc.lock is stale.
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


def pipelines(root: Path) -> list[Path]:
    """Every pipeline's dvc.yaml: the default one, then each study's (studies/<name>/)."""
    return [root / "dvc.yaml", *sorted(root.glob("studies/*/dvc.yaml"))]


def refresh_lock(project: Path, pipeline: Path) -> None:
    """Write the pipeline's resolved params, then record each of its stages' current deps in
    the dvc.lock next to it (DVC runs a pipeline's stages in the folder of its dvc.yaml)."""
    from dvc.repo import Repo

    subprocess.run([sys.executable, "-m", "stages.params"], cwd=pipeline.parent, check=True,
                   stdout=subprocess.DEVNULL)
    with (contextlib.chdir(project),
          Repo(str(project), config={"core": {"no_scm": True}}) as repo, repo.lock):
        stages = list(repo.stage.collect(str(pipeline)))
        for stage in stages:  # `dvc commit --force`, for inputs and outputs that exist
            # (no run-cache entry: DVC would hash the missing outputs of other stages)
            stage.save(allow_missing=True, run_cache=False)
        stages[0].dvcfile.dump_stages(stages, update_pipeline=False)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        fresh_copy(ROOT, project)
        for pipeline in pipelines(project):
            refresh_lock(project, pipeline)
            lock = pipeline.with_suffix(".lock").relative_to(project)
            shutil.copyfile(project / lock, ROOT / lock)
            print(f"{lock}: current with the code and {lock.parent / 'params.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

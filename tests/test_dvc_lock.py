"""The committed dvc.lock records the current code and params.yaml: on a fresh clone,
`dvc status` shows missing outputs only, and `dvc repro --allow-missing --dry` has nothing
to rerun, also once Python has written its bytecode next to the sources (as running
anything does). `python scripts/lock.py` brings it up to date."""

from __future__ import annotations

import compileall
import contextlib
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lock_script():
    spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_fresh_clone_has_nothing_to_rerun_but_missing_outputs(tmp_path: Path):
    from dvc.repo import Repo

    lock_script().fresh_copy(ROOT, tmp_path)
    for code in ("pipeline", "stages"):  # __pycache__/ in every package, as a run leaves
        assert compileall.compile_dir(tmp_path / code, quiet=1)
    with contextlib.chdir(tmp_path), Repo(str(tmp_path),
                                          config={"core": {"no_scm": True}}) as repo:
        stages = list(repo.index.stages)
        with repo.lock:  # what `dvc repro --allow-missing --dry` asks of each stage
            stale = sorted(stage.addressing for stage in stages
                           if stage.changed(allow_missing=True))
        status = repo.status()
    assert not stale, f"dvc.lock is stale for {stale}: run `python scripts/lock.py`"
    assert all(isinstance(entry, dict) for entries in status.values() for entry in entries)
    changes = {change for entries in status.values() for entry in entries
               if isinstance(entry, dict) for group in entry.values()
               for change in group.values()}
    assert changes <= {"deleted", "not in cache"}, status  # missing outputs, nothing else

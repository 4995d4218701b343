"""A sweep the DVC way: `dvc exp run --queue` twice, then `dvc queue start -j 2` runs both
experiments at once, each in DVC's own temporary workspace, to completion.

Each experiment's stages start their own local Ray (`ray.address: local`, no RAY_ADDRESS),
one 1-CPU worker each, so two clusters run side by side on the 2-core machine; none is
left running afterwards. Their sessions live in a Ray temporary directory of this test's
own (`RAY_TMPDIR`), so that other Ray clusters on the machine (other test processes) are
told apart. The project is a fresh copy of this one, cut to one small run, without the
study pipelines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = (1, 2)  # the sweep: runs.simclr.train.epochs
QUEUE_TIMEOUT_S = 900


def lock_script():
    spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sh(args: list[str], cwd: Path, **extra_env: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           **extra_env,
           **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
              for what, value in (("NAME", "sweep"), ("EMAIL", "sweep@localhost"))}}
    env.pop("RAY_ADDRESS", None)  # each experiment starts its own local Ray
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def small_params() -> dict:
    """One SimCLR run on digits, as small as it goes; no transfer target, no comparison."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    run = params["runs"]["simclr"]
    run["backbone"]["width"] = 4
    run["method"]["projector"] = {"hidden_dim": 32, "output_dim": 16, "num_layers": 2}
    run["train"].update(epochs=1, monitor={"every_epochs": 0})
    run.pop("transfer", None)
    params.update(runs={"simclr": run}, seeds=[0],
                  report={"control": [], "supervised": [], "comparisons": []})
    params["ray"].update(address="local", num_workers=1, cpus_per_worker=1)
    return params


def ray_processes(ray_tmp: Path) -> set[int]:
    """Processes of the Ray clusters whose sessions live under `ray_tmp` (their raylets,
    GCS and workers name their session's sockets on their command lines)."""
    listed = subprocess.run(["pgrep", "-f", str(ray_tmp)], capture_output=True,
                            text=True).stdout
    return {int(pid) for pid in listed.split()}


def wait_for_queue(repo: Path) -> str:
    """`dvc queue status` once no experiment is queued or running any more."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while time.monotonic() < deadline:
        status = sh(["dvc", "queue", "status"], repo)
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(5)
    raise AssertionError(f"the queue did not finish in {QUEUE_TIMEOUT_S} s:\n{status}")


@pytest.mark.slow
def test_a_queued_sweep_runs_two_experiments_at_once(tmp_path: Path):
    repo = tmp_path / "project"
    lock_script().fresh_copy(ROOT, repo)
    shutil.rmtree(repo / "studies")  # every DVC command here would read their pipelines
    (repo / "params.yaml").write_text(yaml.safe_dump(small_params(), sort_keys=False))
    sh(["git", "init", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "sweep project"], repo)
    # short: Ray's unix sockets live under it (at most 107 bytes a path)
    ray_tmp = Path(tempfile.mkdtemp(prefix="sweep-ray-", dir="/tmp"))

    for epochs in EPOCHS:
        sh(["dvc", "exp", "run", "--queue", "-n", f"epochs-{epochs}",
            "-S", f"runs.simclr.train.epochs={epochs}"], repo)
    sh(["dvc", "queue", "start", "-j", "2"], repo, RAY_TMPDIR=str(ray_tmp))
    status = wait_for_queue(repo)

    assert status.count("Success") == len(EPOCHS), status
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], repo))
    experiments = {exp["name"]: exp for commit in shown  # listed under their baseline commit
                   for exp in commit["experiments"] or []}
    assert set(experiments) == {f"epochs-{epochs}" for epochs in EPOCHS}
    for epochs in EPOCHS:
        data = experiments[f"epochs-{epochs}"]["revs"][0]["data"]
        assert data["params"]["params.yaml"]["data"]["runs"]["simclr"]["train"][
            "epochs"] == epochs
        # the headline metrics are committed with the experiment, so DVC shows them
        probe = data["metrics"]["metrics/probe/simclr.json"]["data"]
        assert 0.0 < probe["seed_0"]["linear_top1"] == probe["mean"]["linear_top1"] <= 1.0
    # the workspace is as it was, and every Ray the experiments started has stopped
    assert sh(["git", "status", "--porcelain", "--untracked-files=no"], repo) == ""
    assert yaml.safe_load((repo / "params.yaml").read_text()) == small_params()
    sessions = list((ray_tmp / "ray").glob("session_2*"))
    assert len(sessions) >= len(EPOCHS), sessions  # one Ray per experiment at least
    deadline = time.monotonic() + 60
    while ray_processes(ray_tmp) and time.monotonic() < deadline:
        time.sleep(2)
    assert not ray_processes(ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)

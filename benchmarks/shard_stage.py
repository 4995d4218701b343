"""The shard stage's wall time on the embedded default (digits, 1,797 images), as
`dvc repro` runs it: `python -m stages.shard digits` in a fresh project, joined to a local
Ray cluster held open (as `scripts/repro.sh` holds one for a whole `dvc repro`), and with
no cluster to join (the stage then starts its own), `--repeats` times each. The stage's
code is this repository's unless `--code` names another tree (a before/after comparison:
the cluster is always this repository's `scripts/local_ray.py`).

    python -m benchmarks.shard_stage [--code DIR] [--repeats 3] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.record import RESULTS_DIR, machine, write_results

ROOT = Path(__file__).resolve().parents[1]


def stage_env(code: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONPATH": str(code), **extra}


def run(command: list[str], project: Path, env: dict[str, str]) -> float:
    """Seconds `command` took in `project`; it must succeed."""
    started = time.perf_counter()
    subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


@contextmanager
def held_cluster(directory: Path) -> Iterator[dict[str, str]]:
    """A local Ray cluster held open by `scripts/local_ray.py`, as `scripts/repro.sh` holds
    one; yields the environment that joins it (RAY_ADDRESS, ...)."""
    env_file = directory / "ray.env"
    holder = subprocess.Popen([sys.executable, str(ROOT / "scripts/local_ray.py"),
                               str(env_file)], env=stage_env(ROOT), start_new_session=True)
    try:
        while not env_file.exists() or not env_file.read_text():
            if holder.poll() is not None:
                raise RuntimeError("could not start a local Ray cluster")
            time.sleep(0.2)
        yield dict(line.split("=", 1) for line in env_file.read_text().split())
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait()


def shard_seconds(project: Path, code: Path, repeats: int, **env: str) -> dict[str, object]:
    """Wall times of the stage from scratch (its output removed, as DVC does first)."""
    seconds = []
    for _ in range(repeats):
        shutil.rmtree(project / "data", ignore_errors=True)
        seconds.append(round(run([sys.executable, "-m", "stages.shard", "digits"], project,
                                 stage_env(code, **env)), 2))
    return {"seconds": seconds, "median_seconds": statistics.median(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--code", type=Path, default=ROOT, help="the tree of the stage")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "shard_stage.json")
    args = parser.parse_args()
    code = args.code.resolve()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True,
                            text=True).stdout.strip()
    results = {"command": "python -m benchmarks.shard_stage", "code_commit": commit,
               "machine": machine(), "workload": "shard@digits (embedded default)"}
    with tempfile.TemporaryDirectory() as directory:
        project = Path(directory) / "project"
        project.mkdir()
        shutil.copy2(code / "params.yaml", project / "params.yaml")
        run([sys.executable, "-m", "stages.params"], project, stage_env(code))
        with held_cluster(Path(directory)) as joining:
            results["joined_held_cluster"] = shard_seconds(project, code, args.repeats,
                                                           **joining)
        results["no_cluster_to_join"] = shard_seconds(project, code, args.repeats)
    write_results(args.out, results)


if __name__ == "__main__":
    main()

"""The README's first command from a fresh clone: wall time and where it goes.

Clones this repository (its committed HEAD) into a temporary directory and runs
`bash scripts/repro.sh` there, as a new user would, timestamping every line it prints.
Reported: the total wall time, the set-up before the first stage (the install of `.venv`,
unless `--venv` reuses one, then `dvc status` and the local Ray cluster's start), and each
DVC stage's wall time, grouped by kind (`pretrain@`, `features@`, ...). Per pretrain
stage and seed, the time from its `seed` line to its first epoch line is that seed's Ray
Train start-up (cluster join, worker group, process imports). Per stage, the time from
its last line to the next stage's start is DVC's own work after the command (hashing and
caching its outputs, writing dvc.lock) plus the process's exit.

    python benchmarks/first_run.py [--venv PATH] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "first_run.json"
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
SEED_LINE = re.compile(r"^\[[^\]]+\] seed \d+ \(")
EPOCH_LINE = re.compile(r"^\[[^\]]+\] epoch 1/")
INSTALLED_LINE = re.compile(r"^Installed in \d+ s\.")


def timed_lines(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, list]:
    """Run `command`, returning its exit code and [(seconds since start, line)]."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in process.stdout:
        lines.append((time.monotonic() - started, line.rstrip("\n")))
        print(line, end="", flush=True)
    return process.wait(), lines


def fit_startups(lines: list[tuple[float, str]]) -> list[float]:
    """Per seed of a pretrain stage: from its `seed` line to its first epoch line."""
    startups, seed_at = [], None
    for t, text in lines:
        if SEED_LINE.match(text):
            seed_at = t
        elif seed_at is not None and EPOCH_LINE.match(text):
            startups.append(round(t - seed_at, 2))
            seed_at = None
    return startups


def breakdown(lines: list[tuple[float, str]], total: float) -> dict:
    """Set-up before the first stage, each stage's wall time, pretrain start-ups per seed,
    and DVC's time after each stage's last line."""
    starts = [(t, m.group(1)) for t, text in lines if (m := STAGE_LINE.match(text))]
    first = starts[0][0] if starts else total
    installed = next((t for t, text in lines if INSTALLED_LINE.match(text)), None)
    stages, startup, after = {}, {}, {}
    for index, (begin, name) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else total
        stages[name] = round(end - begin, 2)
        own = [(t, text) for t, text in lines if begin <= t < end]
        after[name] = round(end - own[-1][0], 2)
        if name.startswith("pretrain@") and fit_startups(own):
            startup[name] = fit_startups(own)
    kinds: dict[str, float] = defaultdict(float)
    for name, seconds in stages.items():
        kinds[name.split("@")[0]] += seconds
    return {"setup_seconds": round(first, 1),
            "install_seconds": None if installed is None else round(installed, 1),
            "stages_seconds": round(total - first, 1),
            "by_kind_seconds": {k: round(v, 1) for k, v in sorted(kinds.items(),
                                                                   key=lambda kv: -kv[1])},
            "stage_seconds": stages, "pretrain_startup_seconds": startup,
            "after_last_line_seconds": round(sum(after.values()), 1),
            "stage_after_last_line_seconds": after, "stage_processes": len(stages)}


def pretrain_work(clone: Path) -> dict[str, float]:
    """What the pretrain stages spent inside their epochs, over every run and seed, from
    their results (results/pretrain/<run>.json): optimisation and online monitoring."""
    seeds = [seed for path in sorted((clone / "results" / "pretrain").glob("*.json"))
             for seed in json.loads(path.read_text()).values()]
    return {name: round(sum(seed.get(name) or 0.0 for seed in seeds), 1)
            for name in ("train_seconds", "monitor_seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--venv", type=Path, help="reuse this virtual environment "
                        "(the install is then not part of the time)")
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="first-run-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VIRTUAL_ENV")}
    env["TMPDIR"] = str(work)  # no warm compile or kernel caches from earlier runs
    env["UV_CACHE_DIR"] = str(work / "uv-cache")  # nor packages uv unpacked before
    if args.venv:
        env["SSL_PIPELINE_VENV"] = str(args.venv.resolve())
    load_before = os.getloadavg()
    started = time.monotonic()
    code, lines = timed_lines(["bash", "scripts/repro.sh"], clone, env)
    total = time.monotonic() - started
    if code != 0:
        sys.exit(f"scripts/repro.sh exited with {code} (clone kept in {clone})")
    result = {
        "commit": commit,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "command": "bash scripts/repro.sh (fresh clone)",
        "install_included": args.venv is None,
        "total_seconds": round(total, 1),
        **breakdown(lines, total),
        "pretrain_epochs_seconds": pretrain_work(clone),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("total_seconds", "setup_seconds", "install_seconds",
                                             "by_kind_seconds", "pretrain_epochs_seconds",
                                             "after_last_line_seconds")}, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Run a study: studies/<name>/params.yaml through the whole pipeline, then keep its report.

    bash scripts/study.sh <name> [dvc repro args]

The study's params are validated first (one line naming the key, exit 2, nothing
written), then put in place of params.yaml for one `dvc repro` (scripts/repro.sh), and
params.yaml is restored afterwards. DVC's cache and run-cache keep every stage's outputs,
so rerunning a study, or going back to the default, recomputes nothing that is unchanged.
The report (reports/), the dvc.lock that produced it and the wall time are copied to
studies/<name>/report/, to be committed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.params.base import ParamsError  # noqa: E402
from pipeline.params.schema import load_params  # noqa: E402

EXIT_USER_ERROR = 2


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").is_file() else platform.processor()
    return f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.machine()}"


def main() -> int:
    studies = ROOT / "studies"
    if len(sys.argv) < 2:
        known = ", ".join(sorted(p.name for p in studies.iterdir() if p.is_dir()))
        print(f"usage: scripts/study.sh <name> [dvc repro args] (studies: {known})",
              file=sys.stderr)
        return EXIT_USER_ERROR
    name, repro_args = sys.argv[1], sys.argv[2:]
    source = studies / name / "params.yaml"
    if not source.is_file():
        known = ", ".join(sorted(p.name for p in studies.iterdir() if p.is_dir()))
        print(f"error: {source.relative_to(ROOT)}: no such study (studies: {known})",
              file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        params = load_params(source)
    except ParamsError as exc:
        print(*exc.lines(), sep="\n", file=sys.stderr)
        return EXIT_USER_ERROR
    workspace = ROOT / "params.yaml"
    saved = workspace.read_bytes()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # restore params.yaml then
    started = time.time()
    try:
        shutil.copyfile(source, workspace)
        done = subprocess.run(["bash", str(ROOT / "scripts" / "repro.sh"), *repro_args],
                              cwd=ROOT, check=False)
    finally:
        workspace.write_bytes(saved)
    seconds = time.time() - started
    if done.returncode != 0:
        return done.returncode
    report = studies / name / "report"
    staging = studies / name / ".report.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(ROOT / "reports", staging)
    shutil.copyfile(ROOT / "dvc.lock", staging / "dvc.lock")
    (staging / "run.json").write_text(json.dumps({
        "study": name, "wall_seconds": round(seconds, 1), "machine": machine(),
        "runs": len(params.runs), "seeds": params.seeds,
        "repro_args": repro_args}, indent=2) + "\n")
    shutil.rmtree(report, ignore_errors=True)
    staging.rename(report)
    print(f"study {name}: {seconds / 60:.1f} min; report in {report.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

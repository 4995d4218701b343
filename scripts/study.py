"""Studies: each `studies/<name>/` is a DVC pipeline of its own, next to the default one.

    bash scripts/study.sh <name> [dvc repro args]   # run a study (or bring it up to date)
    python scripts/study.py --sync                   # rewrite every study's dvc.yaml

A study directory holds its `params.yaml` and a `dvc.yaml` generated from the root
`dvc.yaml`: the same stages running the same stage modules, with the code deps pointing
two levels up. DVC runs a stage in the directory of its `dvc.yaml` and reads `${runs}`
and `${datasets}` from the `params.yaml` there, so a study's stages read the study's
params and write every output (resolved params, shards, models, features, metrics,
reports) under `studies/<name>/`, with its own `dvc.lock`. Nothing is swapped: the
workspace's `params.yaml` and `dvc.lock` are never touched, an interrupted study leaves
only what DVC itself would (finished stages locked, the rest to rerun), and studies
compare with the default and each other through `dvc exp show` and `dvc metrics diff`.

Running one validates its params first (one line naming the key, exit 2, nothing
written), regenerates its `dvc.yaml` if the root one changed, runs
`dvc repro studies/<name>/dvc.yaml` through `scripts/repro.sh` (one local Ray cluster for
all its pretrain stages) and records the wall time in `studies/<name>/run.json`.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.params.base import ParamsError  # noqa: E402
from pipeline.params.schema import load_params  # noqa: E402

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
STUDIES = ROOT / "studies"
CODE_ROOTS = ("pipeline/", "stages/")  # deps that are code, at the repository's root
HEADER = ("# Generated from ../../dvc.yaml by scripts/study.py (do not edit; run\n"
          "# `python scripts/study.py --sync`). Stages run here, read ./params.yaml and\n"
          "# write under this directory; code deps point at the repository's root.\n")


def study_dep(path: str) -> str:
    """A root pipeline's dep as seen from `studies/<name>/`: code is two levels up."""
    return f"../../{path}" if path.startswith(CODE_ROOTS) else path


def study_stage(stage: dict[str, Any]) -> dict[str, Any]:
    """One stage (or a foreach's `do`) with its code deps pointing at the root."""
    if "do" in stage:
        return {**stage, "do": study_stage(stage["do"])}
    if "deps" not in stage:
        return dict(stage)
    return {**stage, "deps": [study_dep(dep) for dep in stage["deps"]]}


def study_pipeline_text(root_pipeline: Path = ROOT / "dvc.yaml") -> str:
    """The text of every study's dvc.yaml, from the root pipeline."""
    pipeline = yaml.safe_load(root_pipeline.read_text())
    pipeline["stages"] = {name: study_stage(stage)
                          for name, stage in pipeline["stages"].items()}
    return HEADER + yaml.safe_dump(pipeline, sort_keys=False, width=100)


def sync(study: Path) -> bool:
    """Write `study`/dvc.yaml when it is missing or stale; True when it was written."""
    target, text = study / "dvc.yaml", study_pipeline_text()
    if target.is_file() and target.read_text() == text:
        return False
    partial = target.with_suffix(".yaml.tmp")
    partial.write_text(text)
    partial.replace(target)
    return True


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").is_file() else platform.processor()
    return f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.machine()}"


def known_studies() -> str:
    return ", ".join(sorted(p.name for p in STUDIES.iterdir() if (p / "params.yaml").is_file()))


def repro(study: Path, repro_args: list[str]) -> int:
    """`dvc repro` of the study's pipeline; Ctrl-C reaches it (and its stages) through the
    process group, and this waits for it to clean up (its Ray cluster included), then
    exits 130 as a shell reports Ctrl-C."""
    target = str((study / "dvc.yaml").relative_to(ROOT))
    summary = (study / "reports" / "summary.md").relative_to(ROOT)
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        process = subprocess.Popen(["bash", str(ROOT / "scripts" / "repro.sh"), target,
                                    *repro_args], cwd=ROOT,
                                   env={**os.environ, "REPRO_SUMMARY": str(summary)})
        code = process.wait()  # retried after the handler runs (PEP 475)
    finally:
        signal.signal(signal.SIGINT, previous)
    return EXIT_INTERRUPTED if code != 0 and interrupted else code


def run(name: str, repro_args: list[str]) -> int:
    study = STUDIES / name
    source = study / "params.yaml"
    if not source.is_file():
        print(f"error: {source.relative_to(ROOT)}: no such study (studies: {known_studies()})",
              file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        params = load_params(source)
    except ParamsError as exc:
        print(*exc.lines(), sep="\n", file=sys.stderr)
        return EXIT_USER_ERROR
    if sync(study):
        print(f"{study.relative_to(ROOT)}/dvc.yaml: regenerated from dvc.yaml")
    started = time.time()
    code = repro(study, repro_args)
    seconds = time.time() - started
    if code != 0:
        return code
    (study / "run.json").write_text(json.dumps({
        "study": name, "wall_seconds": round(seconds, 1), "machine": machine(),
        "runs": len(params.runs), "seeds": params.seeds,
        "repro_args": repro_args}, indent=2) + "\n")
    print(f"study {name}: {seconds / 60:.1f} min; report in "
          f"{(study / 'reports').relative_to(ROOT)}/")
    return 0


def main() -> int:
    args = sys.argv[1:]
    if args == ["--sync"]:
        for study in sorted(p for p in STUDIES.iterdir() if (p / "params.yaml").is_file()):
            if sync(study):
                print(f"{study.relative_to(ROOT)}/dvc.yaml: regenerated")
        return 0
    if not args or args[0].startswith("-"):
        print(f"usage: scripts/study.sh <name> [dvc repro args] | --sync "
              f"(studies: {known_studies()})", file=sys.stderr)
        return EXIT_USER_ERROR
    return run(args[0], args[1:])


if __name__ == "__main__":
    sys.exit(main())

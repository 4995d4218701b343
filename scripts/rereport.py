"""Rebuild a committed study's report from its committed tables, without retraining.

    python scripts/rereport.py <name> [--report DIR]

Reads studies/<name>/params.yaml and the per-seed tables under studies/<name>/reports/
(runs.csv; efficiency.csv; curves.csv when the run recorded per-seed online curves), runs
the current report code over them (comparisons, Holm, detectable effects, reach, monitor
validity, the plain-words summary), and replaces the report's tables, figures and
summary.md. dvc.lock and run.json, the record of the run that measured the numbers, are
kept. Without curves.csv the per-seed reach and its comparisons are `not recorded` /
`undefined`. A missing or malformed table is one line naming the file, exit 2, and
nothing is replaced.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.errors import UserError, one_line  # noqa: E402
from pipeline.params.base import ParamsError  # noqa: E402
from pipeline.params.schema import load_params  # noqa: E402
from pipeline.report import analyse, write_report  # noqa: E402
from pipeline.resolved.write import report_params  # noqa: E402

EXIT_USER_ERROR = 2
REBUILT = ("runs.csv", "summary.csv", "comparisons.csv", "efficiency.csv", "curves.csv",
           "reach.csv", "monitors.csv", "summary.md", "figures")


def read_table(path: Path, required: bool = True) -> pl.DataFrame | None:
    """A committed CSV table, or None when an optional one is absent."""
    if not path.is_file():
        if required:
            raise UserError(f"{path}: report table missing")
        return None
    try:
        return pl.read_csv(path, infer_schema_length=None)
    except pl.exceptions.PolarsError as exc:
        raise UserError(f"{path}: not a CSV table ({exc.__class__.__name__})") from None


def note(study: str, has_curves: bool) -> str:
    """What summary.md says about where its numbers come from."""
    source = "runs.csv, efficiency.csv and curves.csv" if has_curves else \
        "runs.csv and efficiency.csv"
    text = (f"\nRebuilt from the committed {source} by `python scripts/rereport.py "
            f"{study}` (no retraining); dvc.lock and run.json are those of the "
            "run that measured them.")
    if not has_curves:
        text += (" That run did not record per-seed online curves, so the per-seed epochs "
                 "to reach and their comparisons are not available.")
    return text + "\n"


def rebuild(study: Path, report: Path) -> str:
    """Analyse the committed tables and replace the rebuilt files of `report`."""
    params = report_params(load_params(study / "params.yaml"))
    rows = read_table(report / "runs.csv")
    curves = read_table(report / "efficiency.csv")
    history = read_table(report / "curves.csv", required=False)
    analysis = analyse(rows, curves, history, params)
    with tempfile.TemporaryDirectory(dir=report.parent) as tmp:
        markdown = write_report(Path(tmp), analysis, params, note(study.name, history is not None))
        for name in REBUILT:
            target, built = report / name, Path(tmp) / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            if built.exists():
                built.rename(target)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a study under studies/")
    parser.add_argument("--report", type=Path, help="report folder (default: the study's)")
    args = parser.parse_args()
    study = ROOT / "studies" / args.name
    try:
        if not (study / "params.yaml").is_file():
            raise UserError(f"{study / 'params.yaml'}: no such study")
        print(rebuild(study, args.report or study / "reports"))
    except ParamsError as exc:
        for line in ParamsError(exc.errors, str(study / "params.yaml")).lines():
            print(one_line(line), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except UserError as exc:
        print(one_line(str(exc)), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()

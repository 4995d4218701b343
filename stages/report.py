"""report: per-dataset tables over all runs and seeds, paired comparisons with verdicts,
learning efficiency.

-> reports/summary.md (plain-words claims, the headline table, raw and Holm-adjusted
verdicts with detectable effects, epochs to reach, monitor validity, figures),
reports/{runs,summary,comparisons,efficiency,curves,reach,monitors}.csv,
reports/figures/*.png, and its headline for `dvc metrics`, metrics/summary.json
({dataset: {run: {gap_closed}}}). It reads the stages' results/ (every number), not their
metrics/ headlines. Everything is read and validated
before anything is written; the outputs are then replaced together.
"""

from __future__ import annotations

import sys

from pipeline.io import atomic_dir, write_json
from pipeline.layout import (
    PLOTS_DIR,
    REPORTS_DIR,
    RESULTS_DIR,
    prior_record_path,
    summary_metrics_path,
)
from pipeline.prior_record import stale_priors
from pipeline.report import (
    analyse,
    efficiency_curves,
    monitored_history,
    run_rows,
    summary_metrics,
    write_report,
)
from pipeline.resolved.report import ReportParams
from stages._common import Stage, run_stage

STAGE = Stage("report", ReportParams)


def main(params: ReportParams, _: None) -> None:
    history = monitored_history(PLOTS_DIR, params)
    analysis = analyse(run_rows(RESULTS_DIR, params), efficiency_curves(history, params),
                       history, params)
    stale = stale_priors({f"{name} seed {seed}": prior_record_path(name, seed)
                          for name in params.runs for seed in params.seeds})
    note = ""
    if stale:
        note = "\n**Stale runs** (a DSA prior changed after they trained):\n\n"
        note += "".join(f"- {line}\n" for line in stale)
    with atomic_dir(REPORTS_DIR) as out:
        markdown = write_report(out, analysis, params, note)
        write_json(summary_metrics_path(), summary_metrics(analysis.summary))
    for line in stale:
        print(f"warning: {line}", file=sys.stderr)
    print(markdown)


if __name__ == "__main__":
    run_stage(main, STAGE)

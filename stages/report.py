"""report: per-dataset tables over all runs and seeds, paired comparisons with verdicts,
learning efficiency.

-> reports/summary.md (the headline table, verdicts, epochs to reach, figures),
reports/{runs,summary,comparisons,efficiency,reach}.csv, reports/figures/*.png, and
metrics/summary.json ({dataset: {run: metrics}}). Everything is read and validated
before anything is written; the outputs are then replaced together.
"""

from __future__ import annotations

import sys

from pipeline.io import atomic_dir, write_json
from pipeline.layout import (
    METRICS_DIR,
    PLOTS_DIR,
    REPORTS_DIR,
    prior_record_path,
    summary_metrics_path,
)
from pipeline.prior_record import stale_priors
from pipeline.report import (
    ACCURACY,
    compare_runs,
    comparison_figure,
    efficiency_curves,
    efficiency_figure,
    epochs_to_reach,
    monitored_history,
    run_rows,
    save_figure,
    summarise,
    summary_markdown,
    summary_metrics,
)
from pipeline.resolved.report import ReportParams
from stages._common import Stage, run_stage

STAGE = Stage("report", ReportParams)


def main(params: ReportParams, _: None) -> None:
    rows = run_rows(METRICS_DIR, params)
    summary = summarise(rows, params)
    comparisons = compare_runs(rows, params)
    curves = efficiency_curves(monitored_history(PLOTS_DIR, params), params)
    reach = epochs_to_reach(curves, params)
    stale = stale_priors({f"{name} seed {seed}": prior_record_path(name, seed)
                          for name in params.runs for seed in params.seeds})
    with atomic_dir(REPORTS_DIR) as out:
        figures: dict[str, list[str]] = {}
        for dataset in summary["dataset"].unique(maintain_order=True):
            names = []
            if curves.filter(curves["dataset"] == dataset).height:
                names.append(f"figures/efficiency_{dataset}.png")
                save_figure(efficiency_figure(curves, dataset), out / names[-1])
            if comparisons.filter(comparisons["dataset"] == dataset).height:
                names.append(f"figures/comparisons_{dataset}.png")
                save_figure(comparison_figure(comparisons, dataset, ACCURACY), out / names[-1])
            figures[dataset] = names
        markdown = summary_markdown(summary, comparisons, reach, params, figures)
        if stale:
            markdown += "\n**Stale runs** (a DSA prior changed after they trained):\n\n"
            markdown += "".join(f"- {line}\n" for line in stale)
        rows.write_csv(out / "runs.csv")
        summary.write_csv(out / "summary.csv")
        comparisons.write_csv(out / "comparisons.csv")
        curves.write_csv(out / "efficiency.csv")
        reach.write_csv(out / "reach.csv")
        (out / "summary.md").write_text(markdown)
        write_json(summary_metrics_path(), summary_metrics(summary))
    for line in stale:
        print(f"warning: {line}", file=sys.stderr)
    print(markdown)


if __name__ == "__main__":
    run_stage(main, STAGE)

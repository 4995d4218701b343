"""report: tables per dataset over all runs, seeds aggregated, gap closed, efficiency.

-> reports/runs.csv (every run), reports/summary.{csv,md} (mean ± std per group),
reports/efficiency.csv + reports/figures/efficiency_<dataset>.png (linear top-1 against
pretraining epochs: the online probe of plots/pretrain/<run>.tsv and the final probe),
metrics/summary.json ({dataset: {group: metrics}}). Runs whose DSA prior file changed
after they trained (models/<run>/prior.json) are listed as stale.
"""

from __future__ import annotations

import sys

from pipeline.io import atomic_path, write_json
from pipeline.methods.priors import stale_priors
from pipeline.params import Params
from pipeline.report import (
    aggregate_seeds,
    efficiency_curves,
    gap_closed,
    monitored_history,
    run_rows,
    save_efficiency_figure,
    summary_markdown,
    summary_metrics,
)
from stages._common import (
    METRICS_DIR,
    MODELS_DIR,
    PLOTS_DIR,
    PRIOR_RECORD,
    REPORTS_DIR,
    run_stage,
)

KEYS = ("group_key", "curve_key", "base_key")


def main(params: Params, _: None) -> None:
    rows = run_rows(METRICS_DIR, dict(params.runs))
    groups = gap_closed(aggregate_seeds(rows))
    curves = efficiency_curves(rows, groups, monitored_history(PLOTS_DIR, params.runs))
    with atomic_path(REPORTS_DIR / "runs.csv") as tmp:
        rows.drop(KEYS).write_csv(tmp)
    with atomic_path(REPORTS_DIR / "summary.csv") as tmp:
        groups.drop(KEYS).write_csv(tmp)
    with atomic_path(REPORTS_DIR / "efficiency.csv") as tmp:
        curves.write_csv(tmp)
    for dataset in curves["dataset"].unique(maintain_order=True):
        save_efficiency_figure(curves, dataset,
                               REPORTS_DIR / "figures" / f"efficiency_{dataset}.png")
    markdown = summary_markdown(groups)
    stale = stale_priors({name: MODELS_DIR / name / PRIOR_RECORD for name in params.runs})
    if stale:
        markdown += "\n**Stale runs** (a DSA prior changed after they trained):\n\n"
        markdown += "".join(f"- {line}\n" for line in stale)
        for line in stale:
            print(f"warning: {line}", file=sys.stderr)
    with atomic_path(REPORTS_DIR / "summary.md") as tmp:
        tmp.write_text(markdown)
    write_json(METRICS_DIR / "summary.json", summary_metrics(groups))
    print(markdown)


if __name__ == "__main__":
    run_stage(main)

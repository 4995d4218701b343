"""report: one table over all runs -> reports/summary.{csv,md}, metrics/summary.json."""

from __future__ import annotations

from pipeline.io import atomic_path, write_json
from pipeline.params import Params
from pipeline.report import summary_metrics, summary_table, to_markdown
from stages._common import METRICS_DIR, REPORTS_DIR, run_stage


def main(params: Params, _: None) -> None:
    runs = {name: {"dataset": run.dataset, "method": run.method.name}
            for name, run in params.runs.items()}
    table = summary_table(METRICS_DIR, runs)
    with atomic_path(REPORTS_DIR / "summary.csv") as tmp:
        table.write_csv(tmp)
    with atomic_path(REPORTS_DIR / "summary.md") as tmp:
        tmp.write_text("# Summary over all runs\n\n" + to_markdown(table))
    write_json(METRICS_DIR / "summary.json", summary_metrics(table))
    print(to_markdown(table))


if __name__ == "__main__":
    run_stage(main)

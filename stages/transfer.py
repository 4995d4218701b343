"""transfer@<run>: the probes on each transfer target of the run (its `transfer:` list)."""

from __future__ import annotations

from pipeline.evaluate.transfer import transfer_targets
from pipeline.io import write_json
from pipeline.params import Params
from stages._common import METRICS_DIR, run_stage
from stages.probe import probe_metrics


def main(params: Params, name: str) -> None:
    metrics = {}
    for target in transfer_targets(params, name):
        metrics[target.name] = probe_metrics(params, name, target.dataset, target.train_split,
                                             target.test_split)
        print(f"transfer {name} -> {target.name}: "
              f"linear {metrics[target.name]['linear_top1']:.4f}")
    if not metrics:
        print(f"transfer {name}: no targets (runs.{name}.transfer is empty and the dataset "
              "has no held-out classes)")
    write_json(METRICS_DIR / "transfer" / f"{name}.json", metrics)


if __name__ == "__main__":
    run_stage(main, item="runs")

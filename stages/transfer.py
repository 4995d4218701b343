"""transfer@<run>: the probes on classes held out from pretraining."""

from __future__ import annotations

from pipeline.errors import UserError
from pipeline.io import write_json
from pipeline.params import Params
from stages._common import METRICS_DIR, run_stage
from stages.probe import probe_metrics


def main(params: Params, name: str) -> None:
    dataset = params.runs[name].dataset
    if not params.datasets[dataset].split.heldout_classes:
        raise UserError(f"params.yaml: datasets.{dataset}.split.heldout_classes: empty, so "
                        f"run '{name}' has no held-out classes to transfer to")
    metrics = probe_metrics(params, name, "transfer_train", "transfer_test")
    write_json(METRICS_DIR / "transfer" / f"{name}.json", metrics)
    print(f"transfer {name}: linear {metrics['linear_top1']:.4f} "
          f"knn {metrics['knn_top1']:.4f}")


if __name__ == "__main__":
    run_stage(main, item="runs")

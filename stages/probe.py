"""probe@<run>: linear (top-1/5), kNN and low-shot probes on the run's cached features."""

from __future__ import annotations

from pipeline.evaluate.features import load_features
from pipeline.evaluate.probe import evaluate_probes
from pipeline.io import write_json
from pipeline.params import Params
from stages._common import METRICS_DIR, features_path, run_stage


def probe_metrics(params: Params, name: str, dataset: str, train_split: str,
                  test_split: str) -> dict[str, float]:
    """Every probe of run `name`, trained on one cached split and tested on another."""
    train_x, train_y = load_features(features_path(name, dataset, train_split))
    test_x, test_y = load_features(features_path(name, dataset, test_split))
    return evaluate_probes(train_x, train_y, test_x, test_y, params.evaluate)


def main(params: Params, name: str) -> None:
    metrics = probe_metrics(params, name, params.runs[name].dataset, "train", "test")
    write_json(METRICS_DIR / "probe" / f"{name}.json", metrics)
    print(f"probe {name}: linear {metrics['linear_top1']:.4f} "
          f"(weight decay {metrics['linear_weight_decay']:g})")


if __name__ == "__main__":
    run_stage(main, item="runs")

"""probe@<run>: linear (top-1/5), kNN and low-shot probes on each seed's cached features.

-> metrics/probe/<run>.json ({seed_<s>: metrics}).
"""

from __future__ import annotations

from pipeline.evaluate.probe import probe_cached
from pipeline.layout import features_path, metrics_path
from pipeline.metrics import write_seeded
from pipeline.params import Params
from stages._common import run_stage


def main(params: Params, name: str) -> None:
    dataset, per_seed = params.runs[name].dataset, {}
    for seed in params.seeds:
        per_seed[seed] = metrics = probe_cached(
            features_path(name, seed, dataset, "train"),
            features_path(name, seed, dataset, "test"), params.evaluate)
        print(f"probe {name} seed {seed}: linear {metrics['linear_top1']:.4f} "
              f"(weight decay {metrics['linear_weight_decay']:g})", flush=True)
    write_seeded(metrics_path("probe", name), per_seed)


if __name__ == "__main__":
    run_stage(main, item="runs")

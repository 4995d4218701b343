"""probe@<run>: linear (top-1/5), kNN and low-shot probes on each seed's cached features.

-> results/probe/<run>.json ({seed_<s>: metrics}) and its headline for `dvc metrics`,
metrics/probe/<run>.json (linear and kNN top-1 per seed and their mean).
"""

from __future__ import annotations

from pipeline.evaluate.probe import probe_cached
from pipeline.layout import features_path, metrics_path, results_path
from pipeline.metrics.base import write_headline, write_seeded
from pipeline.metrics.probe import ProbeMetrics, probe_headline
from pipeline.resolved.probe import ProbeParams
from stages._common import Stage, run_stage

STAGE = Stage("probe", ProbeParams, item="runs")


def main(params: ProbeParams, name: str) -> None:
    per_seed = {}
    for seed in params.seeds:
        per_seed[seed] = metrics = probe_cached(
            features_path(name, seed, params.dataset, "train"),
            features_path(name, seed, params.dataset, "test"), params)
        print(f"probe {name} seed {seed}: linear {metrics['linear_top1']:.4f} "
              f"(weight decay {metrics['linear_weight_decay']:g})", flush=True)
    validated = {seed: ProbeMetrics.model_validate(metrics) for seed, metrics in per_seed.items()}
    write_seeded(results_path("probe", name), validated)
    write_headline(metrics_path("probe", name),
                   {seed: probe_headline(metrics, params.knn)
                    for seed, metrics in validated.items()})


if __name__ == "__main__":
    run_stage(main, STAGE)

"""transfer@<run>: the probes on each transfer target of the run (its `transfer:` list),
per seed, and fine-tuning of the whole encoder where a target asks for it
(`finetune.epochs > 0`). -> metrics/transfer/<run>.json ({seed_<s>: {target: metrics}}).
"""

from __future__ import annotations

from pipeline.data.publish import shard_location
from pipeline.evaluate.features import evaluation_device
from pipeline.evaluate.finetune import finetune_split
from pipeline.evaluate.probe import probe_cached
from pipeline.evaluate.transfer import Transfer, transfer_targets
from pipeline.layout import encoder_path, features_path, metrics_path
from pipeline.metrics import write_seeded
from pipeline.nets.backbones import load_encoder
from pipeline.params import Params
from stages._common import run_stage


def finetune_metrics(params: Params, name: str, seed: int, target: Transfer
                     ) -> dict[str, float]:
    """Fine-tune a fresh copy of the run's encoder on the target (models/ is only read)."""
    cfg = params.evaluate
    return finetune_split(load_encoder(encoder_path(name, seed)),
                          shard_location(params, target.dataset), target.train_split,
                          target.test_split, target.finetune, cfg.memory_budget_mb << 20,
                          cfg.shuffle_buffer, evaluation_device(),
                          log=lambda line: print(f"transfer {name} seed {seed} -> "
                                                 f"{target.name}: {line}", flush=True))


def target_metrics(params: Params, name: str, seed: int, target: Transfer) -> dict[str, float]:
    metrics = probe_cached(features_path(name, seed, target.dataset, target.train_split),
                           features_path(name, seed, target.dataset, target.test_split),
                           params.evaluate)
    line = f"linear {metrics['linear_top1']:.4f}"
    if target.finetune.epochs:
        metrics.update(finetune_metrics(params, name, seed, target))
        line += f", fine-tuned {metrics['finetune_top1']:.4f}"
    print(f"transfer {name} seed {seed} -> {target.name}: {line}", flush=True)
    return metrics


def main(params: Params, name: str) -> None:
    targets = transfer_targets(params, name)
    if not targets:
        print(f"transfer {name}: no targets (runs.{name}.transfer is empty and the dataset "
              "has no held-out classes)")
    write_seeded(metrics_path("transfer", name),
                 {seed: {t.name: target_metrics(params, name, seed, t) for t in targets}
                  for seed in params.seeds})


if __name__ == "__main__":
    run_stage(main, item="runs")

"""transfer@<run>: the probes on each transfer target of the run (its `transfer:` list),
per seed, and fine-tuning of the whole encoder where a target asks for it
(`finetune.epochs > 0`). -> results/transfer/<run>.json ({seed_<s>: {target: metrics}}).
"""

from __future__ import annotations

from pipeline.device import evaluation_device
from pipeline.evaluate.finetune import finetune_split
from pipeline.evaluate.probe import probe_cached
from pipeline.layout import encoder_path, features_path, results_path
from pipeline.metrics.base import write_seeded
from pipeline.metrics.transfer import TransferMetrics
from pipeline.nets.backbones import load_encoder
from pipeline.resolved.transfer import Transfer, TransferParams
from pipeline.where import Where, load_where
from stages._common import Stage, run_stage

STAGE = Stage("transfer", TransferParams, item="runs", where=load_where)


def finetune_metrics(params: TransferParams, name: str, seed: int, target: Transfer,
                     where: Where) -> dict[str, float]:
    """Fine-tune a fresh copy of the run's encoder on the target (models/ is only read)."""
    return finetune_split(load_encoder(encoder_path(name, seed)),
                          where.shards(target.dataset), target.train_split,
                          target.test_split, target.finetune, params.memory_budget_mb << 20,
                          params.shuffle_buffer, evaluation_device(),
                          log=lambda line: print(f"transfer {name} seed {seed} -> "
                                                 f"{target.name}: {line}", flush=True))


def target_metrics(params: TransferParams, name: str, seed: int, target: Transfer,
                   where: Where) -> TransferMetrics:
    metrics = probe_cached(features_path(name, seed, target.dataset, target.train_split),
                           features_path(name, seed, target.dataset, target.test_split),
                           params)
    line = f"linear {metrics['linear_top1']:.4f}"
    if target.finetune.epochs:
        metrics.update(finetune_metrics(params, name, seed, target, where))
        line += f", fine-tuned {metrics['finetune_top1']:.4f}"
    print(f"transfer {name} seed {seed} -> {target.name}: {line}", flush=True)
    return TransferMetrics.model_validate(metrics)


def main(params: TransferParams, name: str, where: Where) -> None:
    if not params.targets:
        print(f"transfer {name}: no targets (runs.{name}.transfer is empty and the dataset "
              "has no held-out classes)")
    per_seed = {seed: {t.name: target_metrics(params, name, seed, t, where)
                        for t in params.targets} for seed in params.seeds}
    write_seeded(results_path("transfer", name),
                 {seed: {target: metrics.model_dump(exclude_unset=True)
                         for target, metrics in targets.items()}
                  for seed, targets in per_seed.items()})


if __name__ == "__main__":
    run_stage(main, STAGE)

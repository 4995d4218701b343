"""transfer@<run>: the probes on each transfer target of the run (its `transfer:` list),
and fine-tuning of the whole encoder where a target asks for it (`finetune.epochs > 0`)."""

from __future__ import annotations

import torch

from pipeline.data.shards import read_split
from pipeline.evaluate.finetune import finetune
from pipeline.evaluate.transfer import Transfer, transfer_targets
from pipeline.io import write_json
from pipeline.nets.backbones import load_encoder
from pipeline.params import Params
from stages._common import METRICS_DIR, dataset_shards, encoder_path, run_stage
from stages.probe import probe_metrics


def finetune_metrics(params: Params, name: str, target: Transfer) -> dict[str, float]:
    """Fine-tune a fresh copy of run `name`'s encoder on the target (models/ is only read)."""
    shards = dataset_shards(params, target.dataset)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return finetune(load_encoder(encoder_path(name)), read_split(shards, target.train_split),
                    read_split(shards, target.test_split), target.finetune, device,
                    log=lambda line: print(f"transfer {name} -> {target.name}: {line}",
                                           flush=True))


def main(params: Params, name: str) -> None:
    metrics = {}
    for target in transfer_targets(params, name):
        metrics[target.name] = probe_metrics(params, name, target.dataset, target.train_split,
                                             target.test_split)
        line = f"linear {metrics[target.name]['linear_top1']:.4f}"
        if target.finetune.epochs:
            metrics[target.name].update(finetune_metrics(params, name, target))
            line += f", fine-tuned {metrics[target.name]['finetune_top1']:.4f}"
        print(f"transfer {name} -> {target.name}: {line}")
    if not metrics:
        print(f"transfer {name}: no targets (runs.{name}.transfer is empty and the dataset "
              "has no held-out classes)")
    write_json(METRICS_DIR / "transfer" / f"{name}.json", metrics)


if __name__ == "__main__":
    run_stage(main, item="runs")

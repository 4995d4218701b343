"""pretrain@<run>: Ray Train pretraining of the run once per seed of `seeds`.

-> models/<run>/seed_<s>/encoder.pt (and prior.json, the DSA prior file's sha256, for
file priors), results/pretrain/<run>.json ({seed_<s>: metrics}), and the per-epoch
history plots/pretrain/<run>/seed_<s>.tsv. Outputs are written once every seed has
trained, so an interrupted stage leaves the previous outputs intact.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.io import atomic_dir, write_tsv
from pipeline.layout import (
    encoder_file,
    history_dir,
    history_file,
    models_dir,
    prior_record_file,
    results_path,
)
from pipeline.located import Located, locate
from pipeline.methods.priors import prior_file
from pipeline.metrics.base import write_seeded
from pipeline.metrics.pretrain import PretrainMetrics
from pipeline.nets.backbones import Encoder, save_encoder
from pipeline.params.training import RunConfig
from pipeline.prior_record import write_prior_record
from pipeline.resolved.pretrain import PretrainParams
from pipeline.train.launcher import pretrain, untrained_encoder
from stages._common import Stage, run_stage

HISTORY_COLUMNS = ["epoch", "loss", "lr", "epoch_seconds", "images_per_second"]


STAGE = Stage("pretrain", PretrainParams, item="runs", where=locate)


def train_seed(params: PretrainParams, name: str, seed: int, located: Located
               ) -> tuple[Encoder, list[dict]]:
    run = params.seeded(seed)
    shards = located.where.shards(run.dataset)
    if run.method.name == "random" or run.train.epochs == 0:
        return untrained_encoder(run, shards), []
    ray = located.ray.model_copy(update={"num_workers": params.num_workers})  # the declared
    result = pretrain(name, run, shards, ray, experiment=os.environ.get("DVC_EXP_NAME"))
    return result.encoder, result.history


def pretrain_metrics(history: list[dict]) -> PretrainMetrics:
    last = history[-1] if history else {}
    return PretrainMetrics(
        epochs=len(history), final_loss=last.get("loss"),
        train_seconds=sum(row["epoch_seconds"] for row in history),
        monitor_seconds=sum(row.get("monitor_seconds", 0.0) for row in history),
        images_per_second=last.get("images_per_second"))


def write_history(path: Path, history: list[dict]) -> None:
    extra = sorted({key for row in history for key in row} - set(HISTORY_COLUMNS))
    rows = history or [{"epoch": 0, "loss": float("nan"), "lr": 0.0, "epoch_seconds": 0.0,
                        "images_per_second": 0.0}]
    write_tsv(path, rows, HISTORY_COLUMNS + extra)


def write_outputs(name: str, run: RunConfig, trained: dict[int, tuple[Encoder, list[dict]]]
                  ) -> None:
    prior = prior_file(run)
    with atomic_dir(models_dir(name)) as out:
        for seed, (encoder, _) in trained.items():
            (out / encoder_file(seed)).parent.mkdir(parents=True)
            save_encoder(encoder, out / encoder_file(seed))
            if prior is not None:  # DVC cannot declare it: the report checks it (stale_priors)
                write_prior_record(out / prior_record_file(seed), prior)
    with atomic_dir(history_dir(name)) as out:
        for seed, (_, history) in trained.items():
            write_history(out / history_file(seed), history)
    write_seeded(results_path("pretrain", name),
                 {seed: pretrain_metrics(history) for seed, (_, history) in trained.items()})


def main(params: PretrainParams, name: str, located: Located) -> None:
    trained = {}
    for seed in params.seeds:
        print(f"[{name}] seed {seed} ({params.seeds.index(seed) + 1} of {len(params.seeds)})",
              flush=True)
        trained[seed] = train_seed(params, name, seed, located)
    write_outputs(name, params.run, trained)


if __name__ == "__main__":
    run_stage(main, STAGE)

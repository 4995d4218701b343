"""pretrain@<run>: Ray Train pretraining of the run once per seed of `seeds`.

-> models/<run>/seed_<s>/encoder.pt (and prior.json, the DSA prior file's sha256, for
file priors), metrics/pretrain/<run>.json ({seed_<s>: metrics}), and the per-epoch
history plots/pretrain/<run>/seed_<s>.tsv. Outputs are written once every seed has
trained, so an interrupted stage leaves the previous outputs intact.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.data.publish import shard_location
from pipeline.io import atomic_dir, sha256_file, write_json, write_tsv
from pipeline.layout import (
    MODELS_DIR,
    PLOTS_DIR,
    PRIOR_RECORD,
    metrics_path,
    seed_dir,
)
from pipeline.methods.priors import prior_file
from pipeline.metrics import PretrainMetrics, write_seeded
from pipeline.nets.backbones import Encoder, save_encoder
from pipeline.params import Params, RunConfig
from pipeline.train.launcher import pretrain, untrained_encoder
from stages._common import run_stage

HISTORY_COLUMNS = ["epoch", "loss", "lr", "epoch_seconds", "images_per_second"]


def train_seed(params: Params, name: str, seed: int) -> tuple[Encoder, list[dict]]:
    run = params.seeded(name, seed)
    shards = shard_location(params, run.dataset)
    if run.method.name == "random" or run.train.epochs == 0:
        return untrained_encoder(run, shards), []
    result = pretrain(name, run, shards, params.ray,
                      experiment=os.environ.get("DVC_EXP_NAME"))
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
    with atomic_dir(MODELS_DIR / name) as out:
        for seed, (encoder, _) in trained.items():
            (out / seed_dir(seed)).mkdir()
            save_encoder(encoder, out / seed_dir(seed) / "encoder.pt")
            if prior is not None:  # DVC cannot declare it: the report checks it (stale_priors)
                write_json(out / seed_dir(seed) / PRIOR_RECORD,
                           {"path": str(prior), "sha256": sha256_file(prior)})
    with atomic_dir(PLOTS_DIR / "pretrain" / name) as out:
        for seed, (_, history) in trained.items():
            write_history(out / f"{seed_dir(seed)}.tsv", history)
    write_seeded(metrics_path("pretrain", name),
                 {seed: pretrain_metrics(history) for seed, (_, history) in trained.items()})


def main(params: Params, name: str) -> None:
    trained = {}
    for seed in params.seeds:
        print(f"[{name}] seed {seed} ({params.seeds.index(seed) + 1} of {len(params.seeds)})",
              flush=True)
        trained[seed] = train_seed(params, name, seed)
    write_outputs(name, params.runs[name], trained)


if __name__ == "__main__":
    run_stage(main, item="runs")

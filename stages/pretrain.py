"""pretrain@<run>: Ray Train pretraining -> models/<run>/encoder.pt (and prior.json, the
DSA prior file's sha256, for file priors), metrics, loss plot."""

from __future__ import annotations

import os

from pipeline.io import atomic_dir, sha256_file, write_json, write_tsv
from pipeline.methods.priors import prior_file
from pipeline.nets.backbones import save_encoder
from pipeline.params import Params
from pipeline.train.launcher import pretrain, untrained_encoder
from stages._common import METRICS_DIR, MODELS_DIR, PLOTS_DIR, PRIOR_RECORD, run_stage, shard_dir


def main(params: Params, name: str) -> None:
    run = params.runs[name]
    if run.method.name == "random" or run.train.epochs == 0:
        encoder, history = untrained_encoder(run, shard_dir(params, name)), []
    else:
        result = pretrain(name, run, shard_dir(params, name), params.ray,
                          experiment=os.environ.get("DVC_EXP_NAME"))
        encoder, history = result.encoder, result.history
    prior = prior_file(run)
    with atomic_dir(MODELS_DIR / name) as out:
        save_encoder(encoder, out / "encoder.pt")
        if prior is not None:  # DVC cannot declare it: the report checks it (stale_priors)
            write_json(out / PRIOR_RECORD, {"path": str(prior), "sha256": sha256_file(prior)})
    last = history[-1] if history else {}
    write_json(METRICS_DIR / "pretrain" / f"{name}.json", {
        "epochs": len(history),
        "final_loss": last.get("loss"),
        "train_seconds": sum(row["epoch_seconds"] for row in history),
        "monitor_seconds": sum(row.get("monitor_seconds", 0.0) for row in history),
        "images_per_second": last.get("images_per_second"),
    })
    columns = ["epoch", "loss", "lr", "epoch_seconds", "images_per_second"]
    extra = sorted({key for row in history for key in row} - set(columns))
    rows = history or [{"epoch": 0, "loss": float("nan"), "lr": 0.0, "epoch_seconds": 0.0,
                        "images_per_second": 0.0}]
    write_tsv(PLOTS_DIR / "pretrain" / f"{name}.tsv", rows, columns + extra)


if __name__ == "__main__":
    run_stage(main, item="runs")

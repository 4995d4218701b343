"""Where healthy and collapsing runs sit against the collapse check's floors.

    python benchmarks/collapse_floors.py [--epochs 20] [--threads 2] [--resnet] [--out PATH]

Trains on digits without Ray (`pipeline.train.loop.train_one_epoch`, batch 128) and keeps
the check's statistics of every epoch's last batch, in the units of the floors in
`train.monitor`: feature std x sqrt(D) (`collapse_std_fraction`) and RankMe / min(N, D)
(`collapse_rank_fraction`). Epoch 0 is the untrained encoder (first batch of train).
Runs: healthy SimCLR, BYOL and supervised on small_cnn width 16 (D = 64), and a BYOL built
to collapse (GroupNorm backbone, no BatchNorm in its heads, target momentum 0); with
`--resnet`, two epochs of SimCLR on ResNet-18 (D = 512). Writes
benchmarks/results/collapse_floors.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
from pathlib import Path

import torch

from pipeline.data.batches import MemoryBatches
from pipeline.data.reader import read_split
from pipeline.data.shards import read_manifest, write_shards
from pipeline.data.sources import load_source, make_splits
from pipeline.methods import build_method
from pipeline.optim import build_optimizer, learning_rates
from pipeline.params.data import DigitsSource, SplitConfig
from pipeline.params.training import RunConfig
from pipeline.train.checkpoint import Progress
from pipeline.train.loop import make_encoder, train_one_epoch
from pipeline.train.monitor import batch_features, check_collapse

RESULTS = Path(__file__).parent / "results" / "collapse_floors.json"
VIEWS = {"crop_scale": [0.6, 1.0], "rotation_degrees": 10.0, "color_jitter": 0.8,
         "brightness": 0.4, "contrast": 0.4}
HEADS = {"projector": {"hidden_dim": 256, "output_dim": 64},
         "predictor": {"hidden_dim": 256}}
SMALL_CNN = {"name": "small_cnn", "width": 16}
RUNS = {  # name -> (backbone, method)
    "simclr": (SMALL_CNN, {"name": "simclr", "projector": HEADS["projector"]}),
    "byol": (SMALL_CNN, {"name": "byol", **HEADS}),
    "supervised": (SMALL_CNN, {"name": "supervised"}),
    "byol_collapsing": ({**SMALL_CNN, "norm": "group"}, {
        "name": "byol", "base_momentum": 0.0,
        "projector": {**HEADS["projector"], "batch_norm": False},
        "predictor": {**HEADS["predictor"], "batch_norm": False, "num_layers": 1}}),
}


def run_config(backbone: dict, method: dict, epochs: int) -> RunConfig:
    return RunConfig.model_validate({
        "dataset": "digits", "seed": 0, "backbone": backbone, "method": method,
        "views": VIEWS,
        "train": {"epochs": epochs, "batch_size": 128,
                  "optimizer": {"name": "adam", "lr": 2e-3, "weight_decay": 1e-5,
                                "warmup_epochs": 2}}})


def in_floor_units(stats: dict[str, float], n: int, dim: int) -> dict[str, float]:
    return {"std_fraction": stats["batch_feature_std"] * math.sqrt(dim),
            "rank_fraction": stats["batch_rankme"] / min(n, dim),
            "rankme": stats["batch_rankme"]}


def trajectory(run: RunConfig, shard_dir: Path) -> list[dict[str, float]]:
    """The check's statistics at epoch 0 (untrained) and after every epoch."""
    device = torch.device("cpu")
    manifest = read_manifest(shard_dir)
    batches = MemoryBatches(run, shard_dir, rank=0, world=1, device=device)
    torch.manual_seed(run.seed)
    method = build_method(run.method, make_encoder(run, manifest),
                          len(manifest["class_names"]))
    optimizer = build_optimizer(method, run.train.optimizer)
    rates = learning_rates(run.train.optimizer, batches.steps_per_epoch, run.train.epochs,
                           run.train.batch_size)
    dim, n = method.encoder.feature_dim, run.train.batch_size
    first = read_split(shard_dir, "train").images[:n]
    stats, _ = check_collapse(batch_features(method.encoder, first, device),
                              run.train.monitor)
    rows = [{"epoch": 0, **in_floor_units(stats, n, dim)}]
    progress = Progress()
    for epoch in range(1, run.train.epochs + 1):
        row = train_one_epoch(method, method, optimizer, batches, run, epoch, progress,
                              rates, device, label="bench")
        rows.append({"epoch": epoch, "loss": row["loss"], **in_floor_units(row, n, dim)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--resnet", action="store_true", help="also ResNet-18 (slow on CPU)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = {name: run_config(backbone, method, args.epochs)
            for name, (backbone, method) in RUNS.items()}
    if args.resnet:
        runs["simclr_resnet18"] = run_config({"name": "resnet18", "cifar_stem": True},
                                             RUNS["simclr"][1], 2)
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or "unknown",
                    "torch": torch.__version__, "device": "cpu", "threads": args.threads},
        "workload": "digits train split (digits 0-6), batch 128; statistics of each "
                    "epoch's last batch, as train.monitor's floors read them",
        "floors": {"std_fraction": runs["simclr"].train.monitor.collapse_std_fraction,
                   "rank_fraction": runs["simclr"].train.monitor.collapse_rank_fraction},
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = Path(tmp)
        source = load_source(DigitsSource(name="digits"))
        write_shards(make_splits(source, SplitConfig(heldout_classes=[7, 8, 9])),
                     source.class_names, shard_dir, 500, {"name": "digits"})
        for name, run in runs.items():
            rows = trajectory(run, shard_dir)
            results["runs"][name] = {
                "min_std_fraction": min(r["std_fraction"] for r in rows),
                "min_rank_fraction": min(r["rank_fraction"] for r in rows),
                "epochs": rows}
            print(name, {k: v for k, v in results["runs"][name].items() if k != "epochs"},
                  flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

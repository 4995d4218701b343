"""Overhead of the Ray Train loop against a bare PyTorch loop on the same work.

Both run `pipeline.train.loop.train_one_epoch` (same model, views, batch and data: the
digits training split, SimCLR, small_cnn) with the same number of CPU threads. Reported:
the median steady-state epoch time of each (first two epochs dropped as warm-up), the
relative overhead, and Ray's start-up cost (wall time of `pretrain` minus its epochs).

    python benchmarks/ray_overhead.py [--epochs 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline.data.batches import MemoryBatches
from pipeline.data.shards import read_manifest, write_shards
from pipeline.data.sources import load_source, make_splits
from pipeline.methods import build_method
from pipeline.optim import build_optimizer, learning_rates
from pipeline.params.data import DigitsSource, SplitConfig
from pipeline.params.ray import RayConfig
from pipeline.params.training import RunConfig
from pipeline.train.checkpoint import Progress
from pipeline.train.launcher import pretrain
from pipeline.train.loop import make_encoder, train_one_epoch

RESULTS = Path(__file__).parent / "results" / "ray_overhead.json"


def bare_loop(run: RunConfig, shard_dir: Path) -> list[float]:
    """Epoch times of the same training, in this process, without Ray."""
    manifest = read_manifest(shard_dir)
    device = torch.device("cpu")
    batches = MemoryBatches(run, shard_dir, rank=0, world=1, device=device)
    torch.manual_seed(run.seed)
    method = build_method(run.method, make_encoder(run, manifest), len(manifest["class_names"]))
    optimizer = build_optimizer(method, run.train.optimizer)
    rates = learning_rates(run.train.optimizer, batches.steps_per_epoch, run.train.epochs,
                           run.train.batch_size)
    progress = Progress()
    return [train_one_epoch(method, method, optimizer, batches, run, epoch, progress, rates,
                            device)["epoch_seconds"] for epoch in range(1, run.train.epochs + 1)]


def steady(times: list[float]) -> float:
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = RunConfig.model_validate({
        "dataset": "digits", "backbone": {"name": "small_cnn", "width": 16},
        "method": {"name": "simclr", "projector": {"hidden_dim": 256, "output_dim": 64}},
        "train": {"epochs": args.epochs, "batch_size": 128,
                  "checkpoint_every_epochs": args.epochs},
    })
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = Path(tmp) / "shards"
        shard_dir.mkdir()
        source = load_source(DigitsSource(name="digits"))
        write_shards(make_splits(source, SplitConfig(heldout_classes=[7, 8, 9])),
                     source.class_names, shard_dir, 500, {"name": "digits"})
        bare = bare_loop(run, shard_dir)
        started = time.perf_counter()
        result = pretrain("bench", run, shard_dir,
                          RayConfig(cpus_per_worker=args.threads, storage_path=f"{tmp}/ray"))
        wall = time.perf_counter() - started
    ray_epochs = [row["epoch_seconds"] for row in result.history]
    results = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or "unknown",
                    "torch": torch.__version__, "device": "cpu", "threads": args.threads},
        "workload": "SimCLR, small_cnn width 16, digits train split (884 images), batch 128, "
                    f"{args.epochs} epochs",
        "bare_epoch_seconds_median": steady(bare),
        "ray_epoch_seconds_median": steady(ray_epochs),
        "overhead_percent": 100 * (steady(ray_epochs) / steady(bare) - 1),
        "ray_startup_seconds": wall - sum(ray_epochs),
        "ray_wall_seconds": wall,
        "target_overhead_percent": 10,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""The per-worker training loop that Ray Train runs on every worker.

Every rank holds the (small) training split in memory, walks the same seeded permutation
each epoch and takes its slice of every global batch, so W workers see exactly the global
batches one worker would, and all ranks run the same number of steps.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch.nn.parallel import DistributedDataParallel

from pipeline.data.shards import read_manifest, read_split
from pipeline.data.views import make_views
from pipeline.methods import build_method
from pipeline.nets.backbones import Encoder, save_encoder
from pipeline.params import RunConfig
from pipeline.train.distributed import all_reduce_mean
from pipeline.train.optim import build_optimizer, learning_rates

ENCODER_FILE = "encoder.pt"
HISTORY_FILE = "history.json"


def make_encoder(run: RunConfig, manifest: dict[str, Any]) -> Encoder:
    """A freshly initialised encoder for the run's data (seeded by the caller)."""
    return Encoder(run.backbone, manifest["image_shape"][2], manifest["channel_mean"],
                   manifest["channel_std"])


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> torch.Tensor:
    """[steps, batch_size] sample indices of one epoch, identical on every rank."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    steps = num_samples // batch_size
    return torch.randperm(num_samples, generator=generator)[: steps * batch_size].view(
        steps, batch_size)


def train_worker(config: dict[str, Any]) -> None:
    run = RunConfig.model_validate(config["run"])
    shard_dir = Path(config["shard_dir"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    manifest = read_manifest(shard_dir)
    data = read_split(shard_dir, "train")
    num_classes = len(manifest["class_names"])
    torch.manual_seed(run.seed)
    method = build_method(run.method, make_encoder(run, manifest), num_classes,
                          run.regulator)
    model = ray.train.torch.prepare_model(method)
    core = model.module if isinstance(model, DistributedDataParallel) else model
    optimizer = build_optimizer(core, run.train.optimizer)

    batch_size, epochs = run.train.batch_size, run.train.epochs
    local_batch = batch_size // world
    steps_per_epoch = len(data.labels) // batch_size
    rates = learning_rates(run.train.optimizer, steps_per_epoch, epochs)
    view_generator = torch.Generator(device=device).manual_seed(run.seed * 7919 + rank)
    images, labels = data.images.to(device), data.labels.to(device)

    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        started = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        for batch in epoch_batches(len(labels), batch_size, run.seed, epoch):
            index = batch[rank * local_batch:(rank + 1) * local_batch].to(device)
            view1, view2 = make_views(images[index], run.views, view_generator)
            for group in optimizer.param_groups:
                group["lr"] = rates[step]
            original = images[index].float().div(255)  # un-augmented, for DSA
            outputs = model(view1, view2, labels[index], original)
            optimizer.zero_grad(set_to_none=True)
            outputs["loss"].backward()
            optimizer.step()
            step += 1
            core.after_optimizer_step(step, len(rates))
            for name, value in outputs.items():
                sums[name] = sums.get(name, 0) + value.detach()
        seconds = time.perf_counter() - started
        row = {name: float(all_reduce_mean(total / steps_per_epoch))
               for name, total in sums.items()}
        row.update(epoch=epoch, lr=rates[step - 1], epoch_seconds=seconds,
                   images_per_second=steps_per_epoch * batch_size / seconds)
        history.append(row)
        if rank == 0:
            print(f"[{config['run_name']}] epoch {epoch}/{epochs} loss {row['loss']:.4f} "
                  f"{seconds:.2f}s {row['images_per_second']:.0f} img/s", flush=True)
    # Reports synchronise with Ray Train's controller (about 2 s each), so the loop prints
    # progress every epoch and reports once, with the final checkpoint.
    _report_final(core.encoder, history, rank)


def _report_final(encoder: Encoder, history: list[dict[str, float]], rank: int) -> None:
    """Rank 0 attaches the encoder and the loss history as the run's final checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_encoder(encoder, Path(tmp) / ENCODER_FILE)
            (Path(tmp) / HISTORY_FILE).write_text(json.dumps(history))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(history[-1] if history else {}, checkpoint=checkpoint)

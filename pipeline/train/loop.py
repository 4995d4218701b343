"""The per-worker training loop that Ray Train runs on every worker.

Batches come from `pipeline.data.batches` (`runs.<run>.data.loader`): in memory, every
rank walks the same seeded permutation and takes its slice of every global batch (so W
workers see exactly the batches one worker would); streamed, webdataset readers split the
shards. Either way all ranks run the same number of steps.

Random streams are re-seeded from (seed, epoch, rank) at the start of every epoch, and
checkpoints are written at epoch boundaries with the data position, so a run resumed from
a checkpoint continues bit for bit as if it had never stopped (on CPU); a resume that
could not (another world size or loader layout) stops with one line naming the key.

Every epoch ends with a collapse check on the encoder's features of its last batch, and
rank 0 runs the online probes every `train.monitor.every_epochs` (train/monitor.py);
checkpoints are train/checkpoint.py's, the bf16/fp32 choice pipeline/precision.py's.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.data.batches import Batches, pretraining_batches
from pipeline.data.shards import read_manifest
from pipeline.data.storage import ReadPolicy, configure_reads, read_retries
from pipeline.data.views import make_views
from pipeline.distributed import all_reduce_mean
from pipeline.errors import UserError
from pipeline.methods import Method, build_method
from pipeline.nets.backbones import Encoder
from pipeline.optim import build_optimizer, learning_rates
from pipeline.params.training import RunConfig
from pipeline.precision import autocast, bf16_enabled, check_precision
from pipeline.train.checkpoint import (
    AFRESH,
    STATE_FILE,
    Progress,
    checkpoint_file,
    load_state,
    save_state,
)
from pipeline.train.monitor import batch_features, check_collapse, collapse_warning, monitor_probes

DIVERGED = "non-finite loss"


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the message names the epoch and step."""


def precision_key(run_name: str) -> str:
    return f"runs.{run_name}.train.precision"


def make_encoder(run: RunConfig, manifest: dict[str, Any]) -> Encoder:
    """A freshly initialised encoder for the run's data (seeded by the caller)."""
    return Encoder(run.backbone, manifest["image_shape"][2], manifest["channel_mean"],
                   manifest["channel_std"])


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of a rank's augmentation stream in one epoch (distinct across ranks)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63 - 1)


def sync_trainable_batch_norm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm for the networks that train only: the EMA target and a regulator's
    prior run gradient-free, and synchronising their BN layers would add a blocking
    all-reduce per layer per step for statistics nothing learns from (per-GPU, as in BYOL).
    """
    for name, child in list(module.named_children()):
        trainable = [parameter.requires_grad for parameter in child.parameters()]
        if all(trainable):
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        elif any(trainable):  # mixed, like a regulator holding a frozen prior
            sync_trainable_batch_norm(child)
    return module


def check_data_position(progress: Progress, batches: Batches, state_file: str,
                        run_name: str) -> None:
    """A resumed run reads, from its next epoch on, exactly the batches the uninterrupted
    run would: the checkpoint's data position must be this run's (same ranks, loader and
    loader processes); otherwise one line naming the file and the key."""
    if progress.data is None:  # written before positions were recorded
        return
    mismatch = progress.data.mismatch(batches.position(progress.epoch), run_name)
    if mismatch:
        raise UserError(f"{state_file}: {mismatch}, or {AFRESH}")


def prepare(method: Method, run: RunConfig, world: int, device: torch.device) -> nn.Module:
    """SyncBatchNorm across GPUs, channels_last, DDP (via Ray) and optional compile."""
    if world > 1 and device.type == "cuda":
        method = sync_trainable_batch_norm(method)
    if run.train.channels_last:
        method = method.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(method)
    return torch.compile(model) if run.train.compile else model


def train_worker(config: dict[str, Any]) -> None:
    run = RunConfig.model_validate(config["run"])
    configure_reads(ReadPolicy(**config["read_policy"]))  # the driver's, from params.yaml
    shard_dir = config["shard_dir"]  # a directory every node sees, or a URL prefix
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    check_precision(run.train.precision, device, precision_key(config["run_name"]))
    manifest = read_manifest(shard_dir, config["manifest_digest"])
    batches = pretraining_batches(run, shard_dir, rank, world, device)
    monitor_every = run.train.monitor.every_epochs
    torch.manual_seed(run.seed)
    core = build_method(run.method, make_encoder(run, manifest), len(manifest["class_names"]),
                        run.regulator)
    progress, optimizer_state = Progress(), None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        progress, optimizer_state = load_state(checkpoint, core)
        check_data_position(progress, batches, checkpoint_file(checkpoint, STATE_FILE),
                            config["run_name"])
        if rank == 0:
            print(f"[{config['run_name']}] resumed from epoch {progress.epoch} "
                  f"(step {progress.step})", flush=True)
    model = prepare(core, run, world, device)
    core = model.module if isinstance(model, DistributedDataParallel) else core
    optimizer = build_optimizer(core, run.train.optimizer)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    epochs = run.train.epochs
    rates = learning_rates(run.train.optimizer, batches.steps_per_epoch, epochs,
                           run.train.batch_size)
    for epoch in range(progress.epoch + 1, epochs + 1):
        row = train_one_epoch(model, core, optimizer, batches, run, epoch, progress, rates,
                              device, rank, label=config["run_name"])
        row["skipped_shards"] = world * float(all_reduce_mean(
            torch.tensor(float(batches.skipped_shards), device=device)))
        row["read_retries"] = world * float(all_reduce_mean(  # every rank's, so far
            torch.tensor(float(read_retries()), device=device)))
        if monitor_every and (epoch % monitor_every == 0 or epoch == epochs) and rank == 0:
            started = time.perf_counter()
            row.update(monitor_probes(core.encoder, shard_dir, run,
                                      run.train.batch_size // world, device))
            row["monitor_seconds"] = time.perf_counter() - started  # not in epoch_seconds
        progress.epoch, progress.data = epoch, batches.position(epoch)
        progress.history.append(row)
        if rank == 0:
            print(_progress_line(config["run_name"], row, epochs, progress.history), flush=True)
        if epoch % run.train.checkpoint_every_epochs == 0 or epoch == epochs:
            _report(core, optimizer, progress, rank)


def train_one_epoch(model: nn.Module, core: Method, optimizer: torch.optim.Optimizer,
                    batches: Batches, run: RunConfig, epoch: int, progress: Progress,
                    rates: list[float], device: torch.device, rank: int = 0, label: str = "run"
                    ) -> dict[str, float]:
    """One epoch of optimisation steps; the epoch's mean of every output, its time and
    throughput (global images/s), and the collapse check's statistics of its last batch
    (rank 0 prints the warning). `progress.step` advances."""
    steps = batches.steps_per_epoch
    memory_format = torch.channels_last if run.train.channels_last else torch.contiguous_format
    model.train()
    started = time.perf_counter()
    torch.manual_seed(epoch_seed(run.seed, epoch, rank))
    view_generator = torch.Generator(device=device).manual_seed(epoch_seed(run.seed, epoch, rank))
    sums: dict[str, torch.Tensor] = {}
    bf16 = bf16_enabled(run.train.precision, device)
    for images, labels in batches.epoch(epoch):
        view1, view2 = (v.contiguous(memory_format=memory_format)
                        for v in make_views(images, run.views, view_generator))
        for group in optimizer.param_groups:
            group["lr"] = rates[progress.step]
        with autocast(bf16, device):
            original = (images.float().div(255).contiguous(memory_format=memory_format)
                        if core.regulator is not None else None)
            outputs = model(view1, view2, labels, original)  # x0 feeds the DSA regulator
        loss = outputs["loss"]
        if not torch.isfinite(loss.detach()).item():
            raise TrainingDiverged(
                f"{DIVERGED} ({loss.item()}) at epoch {epoch}, step {progress.step + 1} of run "
                f"'{label}'; the last good checkpoint is kept (epoch {progress.epoch})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.step += 1
        core.after_optimizer_step(progress.step, len(rates))
        for name, value in outputs.items():
            sums[name] = sums.get(name, 0) + value.detach().float()
    seconds = time.perf_counter() - started
    row = {name: float(all_reduce_mean(total / steps)) for name, total in sums.items()}
    row.update(epoch=epoch, lr=rates[progress.step - 1], epoch_seconds=seconds,
               images_per_second=steps * run.train.batch_size / seconds)
    stats, reasons = check_collapse(batch_features(core.encoder, images, device),
                                    run.train.monitor)
    row.update(stats)  # after the clock: epoch_seconds stays the optimisation's time
    if reasons and rank == 0:
        print(collapse_warning(label, epoch, reasons), flush=True)
    return row


def _progress_line(run_name: str, row: dict[str, float], epochs: int,
                   history: list[dict[str, float]]) -> str:
    recent = [r["epoch_seconds"] for r in history[-5:]]
    eta = (epochs - row["epoch"]) * sum(recent) / len(recent)
    probes = "".join(f" {label} {row[key]:{spec}}" for key, label, spec in
                     (("knn_top1", "knn", ".4f"), ("linear_top1", "linear", ".4f"),
                      ("rankme", "rankme", ".1f"), ("feature_std", "std", ".4f"))
                     if key in row)
    return (f"[{run_name}] epoch {row['epoch']}/{epochs} loss {row['loss']:.4f}{probes} "
            f"lr {row['lr']:.2e} {row['epoch_seconds']:.2f}s "
            f"{row['images_per_second']:.0f} img/s eta {math.ceil(eta)}s")


def _report(core: Method, optimizer: torch.optim.Optimizer, progress: Progress,
            rank: int) -> None:
    """Every rank reports (a barrier); rank 0 attaches the checkpoint.

    Reports synchronise with Ray Train's controller, so the loop prints progress every
    epoch but reports only when it checkpoints.
    """
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_state(Path(tmp), core, optimizer, progress)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(progress.history[-1], checkpoint=checkpoint,
                         checkpoint_dir_name=f"epoch_{progress.epoch:06d}")

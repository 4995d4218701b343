"""The per-worker training loop that Ray Train runs on every worker.

Batches come from `pipeline.data.batches` (`runs.<run>.data.loader`): in memory, every
rank walks the same seeded permutation and takes its slice of every global batch (so W
workers see exactly the batches one worker would); streamed, webdataset readers split the
shards. Either way all ranks run the same number of steps.

Random streams are re-seeded from (seed, epoch, rank) at the start of every epoch, and
checkpoints are written at epoch boundaries, so a run resumed from a checkpoint continues
bit for bit as if it had never stopped (on CPU).

Every epoch ends with a collapse check on the encoder's features of its last batch (one
eval-mode forward pass and the spectrum of one batch): a collapse prints a `warning:` line
and training continues.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.data.batches import Batches, pretraining_batches
from pipeline.data.shards import read_manifest
from pipeline.data.views import make_views
from pipeline.distributed import all_reduce_mean, native_bf16
from pipeline.errors import UserError
from pipeline.evaluate.features import extract_features, split_features
from pipeline.evaluate.probe import knn_probe, linear_probe
from pipeline.evaluate.spectrum import rankme, std_of_l2_normalized
from pipeline.methods import Method, build_method
from pipeline.nets.backbones import Encoder, save_encoder
from pipeline.optim import build_optimizer, learning_rates
from pipeline.params import MonitorConfig, RunConfig

ENCODER_FILE = "encoder.pt"
HISTORY_FILE = "history.json"
STATE_FILE = "state.pt"
DIVERGED = "non-finite loss"


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class UnsupportedPrecision(UserError):
    """`train.precision: bf16` on a GPU without native bf16 (found only on the worker)."""


@dataclass
class Progress:
    """Where training stands: completed epochs and steps, and the per-epoch history."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def make_encoder(run: RunConfig, manifest: dict[str, Any]) -> Encoder:
    """A freshly initialised encoder for the run's data (seeded by the caller)."""
    return Encoder(run.backbone, manifest["image_shape"][2], manifest["channel_mean"],
                   manifest["channel_std"])


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of a rank's augmentation stream in one epoch (distinct across ranks)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63 - 1)


def train_in_bf16(precision: str, device: torch.device, run_name: str) -> bool:
    """`train.precision`: `auto` is bf16 where the device multiplies bf16 natively and fp32
    elsewhere (a GPU that only emulates bf16 would run slower, not faster); `bf16` is
    honoured on CPU (autocast works there) and is an error on a GPU without native bf16."""
    if precision == "auto":
        return native_bf16(device)
    if precision == "bf16" and device.type == "cuda" and not native_bf16(device):
        raise UnsupportedPrecision(
            f"params.yaml: runs.{run_name}.train.precision: bf16, but "
            f"{torch.cuda.get_device_name(device)} has no native bf16; use auto or fp32")
    return precision == "bf16"


def autocast(bf16: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast when the run trains in bf16 (see `train_in_bf16`)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def save_state(directory: Path, core: Method, optimizer: torch.optim.Optimizer,
               progress: Progress) -> None:
    """Everything needed to continue exactly (the schedule is a function of the step)."""
    torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": progress.epoch, "step": progress.step}, directory / STATE_FILE)
    (directory / HISTORY_FILE).write_text(json.dumps(progress.history))
    save_encoder(core.encoder, directory / ENCODER_FILE)


def load_state(directory: Path, core: Method) -> tuple[Progress, dict[str, Any]]:
    """Load model weights (in place) and return the progress and optimizer state."""
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    core.load_state_dict(state["model"])
    history = json.loads((directory / HISTORY_FILE).read_text())
    return Progress(state["epoch"], state["step"], history), state["optimizer"]


@torch.no_grad()
def monitor_probes(encoder: Encoder, shard_dir: str, run: RunConfig, batch_size: int,
                   device: torch.device) -> dict[str, float]:
    """Online kNN and linear top-1 (train split -> test split), on features extracted once,
    and the label-free RankMe and feature std of the same train features.

    The first `monitor.max_samples` images of each split are streamed through the encoder
    in per-shard batches of `batch_size`, each time: only their features are held.

    The linear probe uses one fixed weight decay (`train.monitor.linear_weight_decay`), so
    successive epochs are comparable and cheap; the probe stage's validated choice stays
    the final word.
    """
    cfg = run.train.monitor
    was_training = encoder.training
    bank_x, bank_y = split_features(encoder, shard_dir, "train", batch_size, device,
                                    cfg.max_samples)
    query_x, query_y = split_features(encoder, shard_dir, "test", batch_size, device,
                                      cfg.max_samples)
    encoder.train(was_training)
    linear = linear_probe(bank_x, bank_y, query_x, query_y, (cfg.linear_weight_decay,),
                          max_iter=cfg.linear_max_iter)
    return {"knn_top1": knn_probe(bank_x, bank_y, query_x, query_y, cfg.k, cfg.temperature),
            "linear_top1": linear["linear_top1"],
            "rankme": rankme(bank_x), "feature_std": std_of_l2_normalized(bank_x)}


@torch.no_grad()
def batch_features(encoder: Encoder, images: torch.Tensor, device: torch.device
                   ) -> torch.Tensor:
    """The encoder's features of one batch in eval mode (BatchNorm statistics untouched),
    leaving the encoder in the mode it was in."""
    was_training = encoder.training
    features = extract_features(encoder, images, len(images), device)
    encoder.train(was_training)
    return features


def check_collapse(features: torch.Tensor, cfg: MonitorConfig
                   ) -> tuple[dict[str, float], list[str]]:
    """RankMe and feature std of one batch's features [N, D], and why they say collapse
    (empty when healthy): std below `collapse_std_fraction` / sqrt(D), or RankMe below
    `collapse_rank_fraction` * min(N, D). NaN statistics (a diverging run) say nothing:
    the loss check reports that."""
    n, dim = features.shape
    stats = {"batch_rankme": rankme(features),
             "batch_feature_std": std_of_l2_normalized(features)}
    std_floor = cfg.collapse_std_fraction / math.sqrt(dim)
    rank_floor = cfg.collapse_rank_fraction * min(n, dim)
    reasons = []
    if stats["batch_feature_std"] < std_floor:
        reasons.append(f"feature std {stats['batch_feature_std']:.3g} < {std_floor:.3g} "
                       f"({cfg.collapse_std_fraction:g}/sqrt({dim}))")
    if stats["batch_rankme"] < rank_floor:
        reasons.append(f"RankMe {stats['batch_rankme']:.3g} < {rank_floor:.3g} "
                       f"({cfg.collapse_rank_fraction:g} x min({n}, {dim}))")
    return stats, reasons


def collapse_warning(run_name: str, epoch: int, reasons: list[str]) -> str:
    return (f"warning: [{run_name}] epoch {epoch}: embeddings collapsing: "
            f"{'; '.join(reasons)} (train.monitor.collapse_*; training continues)")


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
    shard_dir = config["shard_dir"]  # a directory every node sees, or a URL prefix
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    train_in_bf16(run.train.precision, device, config["run_name"])  # fails before any work
    manifest = read_manifest(shard_dir, config["manifest_digest"])
    batches = pretraining_batches(run, shard_dir, rank, world, device)
    monitor_every = run.train.monitor.every_epochs
    torch.manual_seed(run.seed)
    core = build_method(run.method, make_encoder(run, manifest), len(manifest["class_names"]),
                        run.regulator)
    progress, optimizer_state = Progress(), None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            progress, optimizer_state = load_state(Path(directory), core)
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
        if monitor_every and (epoch % monitor_every == 0 or epoch == epochs) and rank == 0:
            started = time.perf_counter()
            row.update(monitor_probes(core.encoder, shard_dir, run,
                                      run.train.batch_size // world, device))
            row["monitor_seconds"] = time.perf_counter() - started  # not in epoch_seconds
        progress.epoch = epoch
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
    bf16 = train_in_bf16(run.train.precision, device, label)
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

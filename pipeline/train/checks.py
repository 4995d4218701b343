"""What a run asks of its batch, its workers, its data and the machine, checked before Ray
starts.

Inside the workers the same problems cost a cluster start and end in a worker traceback;
here each is one line naming the key to change. The per-step sizes mirror the methods: a
loss that gathers over workers sees the global batch, otherwise each worker's share.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pipeline.data.batches import chosen_loader
from pipeline.data.loader import StreamSpec, stream_buffer_images
from pipeline.data.reader import image_bytes, split_bytes
from pipeline.data.shards import MANIFEST, manifest_decoding, read_manifest
from pipeline.io import load_torch_file
from pipeline.losses.triplet import auto_skip
from pipeline.methods.priors import prior_file
from pipeline.nets.backbones import load_encoder
from pipeline.params.base import ParamsError
from pipeline.params.methods import MoCoMethod, TripletMethod
from pipeline.params.ray import RayConfig
from pipeline.params.training import RunConfig

Problems = list[tuple[str, str]]  # (YAML key, message), as ParamsError holds them


def check_run(run_name: str, run: RunConfig, ray_cfg: RayConfig, shard_dir: Path) -> None:
    """Every check that depends on the global batch, the worker count or the dataset;
    raises a ParamsError listing each problem at its key (a UserError for a bad file)."""
    manifest = read_manifest(shard_dir)
    problems = (_data_problems(run_name, run, ray_cfg.num_workers, shard_dir, manifest)
                + _gpu_problems(ray_cfg) + _prior_problems(run_name, run, manifest))
    if problems:
        raise ParamsError(problems)


def check_resources(ray_cfg: RayConfig) -> None:
    """An embedded cluster must fit this machine: Ray would wait forever for resources."""
    if ray_cfg.address != "local":
        return
    needed = ray_cfg.num_workers * ray_cfg.cpus_per_worker
    available = os.cpu_count() or 1
    if needed > available:
        raise ParamsError([("ray.cpus_per_worker",
                            f"{ray_cfg.num_workers} workers x {ray_cfg.cpus_per_worker} CPUs "
                            f"= {needed}, but this machine has {available}")])
    gpus = ray_cfg.num_workers * ray_cfg.gpus_per_worker
    if ray_cfg.use_gpu and torch.cuda.device_count() < gpus:
        raise ParamsError([("ray.use_gpu", f"{ray_cfg.num_workers} workers x "
                            f"{ray_cfg.gpus_per_worker:g} GPUs, this machine has "
                            f"{torch.cuda.device_count()}")])


def per_step_rows(batch_size: int, workers: int, gathered: bool) -> int:
    """Rows a loss sees per step: the global batch when it gathers (or one worker runs
    it), each worker's share otherwise."""
    return batch_size if gathered or workers == 1 else batch_size // workers


def _batch_text(batch_size: int, workers: int, gathered: bool, switch: str) -> str:
    """Where a per-step batch comes from, in the user's keys."""
    if gathered or workers == 1:
        return f"train.batch_size {batch_size}"
    return (f"train.batch_size {batch_size} / ray.num_workers {workers}; "
            f"{switch}.gather_distributed is false")


def _data_problems(run_name: str, run: RunConfig, workers: int, shard_dir: Path,
                   manifest: dict[str, Any]) -> Problems:
    """The pretraining splits exist, hold a global batch that splits evenly over the
    workers, and each step has the rows its losses need."""
    key, batch = f"runs.{run_name}", run.train.batch_size
    missing = [split for split in run.data.splits if split not in manifest["splits"]]
    if missing:
        return [(f"{key}.data.splits", f"'{missing[0]}' is not a split of "
                 f"{shard_dir / MANIFEST} ({', '.join(manifest['splits'])})")]
    if batch % workers:
        return [(f"{key}.train.batch_size",
                 f"{batch} is not divisible by ray.num_workers ({workers})")]
    images = sum(manifest["splits"][split]["count"] for split in run.data.splits)
    if images < batch:
        return [(f"{key}.train.batch_size", f"{batch} is larger than the pretraining data "
                 f"({' + '.join(run.data.splits)}: {images} images)")]
    return (_memory_problems(run_name, run, workers, shard_dir, manifest)
            + _batch_problems(run_name, run, workers) + _queue_problems(run_name, run, images))


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _memory_problems(run_name: str, run: RunConfig, workers: int, shard_dir: Path,
                     manifest: dict[str, Any]) -> Problems:
    """What a rank holds must fit `data.memory_budget_mb`: the splits with the memory
    loader (device memory), the shuffle buffers and prefetched batches streamed (host)."""
    key, data = f"runs.{run_name}.data", run.data
    budget = data.memory_budget_mb << 20
    held = split_bytes(shard_dir, data.splits)
    if chosen_loader(run, shard_dir) == "memory":
        if held <= budget:
            return []
        return [(f"{key}.memory_budget_mb",
                 f"{data.memory_budget_mb} MiB per rank, but the memory loader holds "
                 f"{' + '.join(data.splits)} on every rank: {_mib(held)} decoded; set "
                 "data.loader: auto (or stream) to stream them, or raise the budget")]
    spec = StreamSpec((), manifest_decoding(manifest), run.train.batch_size // workers,
                      shuffle_buffer=data.shuffle_buffer)
    buffered = stream_buffer_images(spec, data.workers) * image_bytes(manifest)
    if buffered <= budget:
        return []
    return [(f"{key}.shuffle_buffer",
             f"{data.shuffle_buffer} images per loader process x {max(data.workers, 1)} "
             f"(data.workers), with prefetched batches: {_mib(buffered)} per rank, over "
             f"data.memory_budget_mb ({data.memory_budget_mb} MiB); lower the buffer or "
             "data.workers, or raise the budget")]


def _gpu_problems(ray_cfg: RayConfig) -> Problems:
    """Each worker trains on exactly one GPU of its own (DDP over NCCL)."""
    gpus = ray_cfg.gpus_per_worker
    if not ray_cfg.use_gpu or gpus == 1:
        return []
    if gpus > 1:
        return [("ray.gpus_per_worker", f"{gpus:g} GPUs per worker, but a worker trains on "
                 "one GPU and the others would sit idle; set 1 and one worker per GPU "
                 "(ray.num_workers)")]
    if ray_cfg.num_workers > 1:
        return [("ray.gpus_per_worker", f"{gpus:g} lets {ray_cfg.num_workers} workers share "
                 "a GPU, which NCCL cannot do; set 1 (one GPU per worker)")]
    return []


def _batch_problems(run_name: str, run: RunConfig, workers: int) -> Problems:
    """DSA's kNN and the truncated triplet's ranked negatives need enough rows per step."""
    key, batch = f"runs.{run_name}", run.train.batch_size
    problems = []
    regulator = run.regulator
    if regulator is not None:
        gathered = regulator.gather_distributed
        rows = per_step_rows(batch, workers, gathered)
        if regulator.k >= rows:
            source = _batch_text(batch, workers, gathered, "regulator")
            problems.append((f"{key}.regulator.k", f"{regulator.k} neighbours need a per-step "
                             f"batch larger than {regulator.k} ({source})"))
    method = run.method
    if isinstance(method, TripletMethod):
        rows = per_step_rows(batch, workers, method.gather_distributed)
        skip = (auto_skip(rows - 1, method.expected_classes) if method.skip == "auto"
                else method.skip)
        if skip + method.k > rows - 1:
            skip_text = f"skip: auto ({skip})" if method.skip == "auto" else f"skip {skip}"
            source = _batch_text(batch, workers, method.gather_distributed, "method")
            problems.append((f"{key}.method.k", f"{skip_text} + k {method.k} needs "
                             f"{skip + method.k} negatives per anchor, but a per-step batch "
                             f"of {rows} has {rows - 1} ({source})"))
    return problems


def _queue_problems(run_name: str, run: RunConfig, images: int) -> Problems:
    """MoCo's queue takes whole global batches of keys and, to hold no image twice, no
    more keys than there are pretraining images."""
    method, batch = run.method, run.train.batch_size
    if not isinstance(method, MoCoMethod):
        return []
    key, size = f"runs.{run_name}.method.queue_size", method.queue_size
    if size % batch:
        return [(key, f"{size} is not a multiple of the global batch (train.batch_size "
                 f"{batch})")]
    if size > images:
        return [(key, f"{size} keys exceed the {images} pretraining images "
                 f"({' + '.join(run.data.splits)})")]
    return []


def _prior_problems(run_name: str, run: RunConfig, manifest: dict[str, Any]) -> Problems:
    """A DSA prior file must load (a UserError naming it otherwise) and a prior encoder
    must take the dataset's channels; a missing file is `check_prior`'s to report."""
    path = prior_file(run)
    if path is None or not path.is_file():
        return []
    if run.regulator.prior == "torchvision":
        load_torch_file(path)
        return []
    channels = manifest["image_shape"][2]
    prior = load_encoder(path)
    if prior.in_channels != channels:
        return [(f"runs.{run_name}.regulator.prior_path",
                 f"{path} takes {prior.in_channels}-channel images, dataset "
                 f"'{run.dataset}' has {channels}")]
    return []

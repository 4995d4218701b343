"""Checks of batch, workers, data and GPUs that run before Ray starts (no Ray here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.errors import UserError
from pipeline.losses.dsa import knn_indices
from pipeline.losses.triplet import truncated_triplet_loss
from pipeline.nets.backbones import Encoder, save_encoder
from pipeline.params.base import ParamsError
from pipeline.params.ray import RayConfig
from pipeline.params.training import RunConfig
from pipeline.train.checks import check_run


def shards(tmp_path: Path, train: int = 100, channels: int = 1) -> Path:
    """A shard directory as far as the checks read it: the manifest."""
    manifest = {"splits": {"train": {"count": train}, "test": {"count": 30}},
                "image_shape": [8, 8, channels]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def run_config(batch_size: int = 16, method: dict | None = None, regulator: dict | None = None,
               **extra) -> RunConfig:
    return RunConfig.model_validate({
        "dataset": "digits", "backbone": {"name": "small_cnn", "width": 4},
        "method": method or {"name": "simclr"}, "regulator": regulator,
        "train": {"batch_size": batch_size}, **extra})


def problems(run: RunConfig, shard_dir: Path, **ray) -> list[str]:
    try:
        check_run("r", run, RayConfig(**ray), shard_dir)
    except ParamsError as error:
        return error.lines()
    return []


def test_dsa_k_needs_a_larger_per_step_batch(tmp_path):
    shard_dir = shards(tmp_path)
    assert problems(run_config(16, regulator={"name": "dsa", "k": 20}), shard_dir) == [
        "params.yaml: runs.r.regulator.k: 20 neighbours need a per-step batch larger than 20 "
        "(train.batch_size 16)"]
    local = run_config(32, regulator={"name": "dsa", "k": 20, "gather_distributed": False})
    assert problems(local, shard_dir, num_workers=2) == [
        "params.yaml: runs.r.regulator.k: 20 neighbours need a per-step batch larger than 20 "
        "(train.batch_size 32 / ray.num_workers 2; regulator.gather_distributed is false)"]
    gathered = run_config(32, regulator={"name": "dsa", "k": 20})
    assert problems(gathered, shard_dir, num_workers=2) == []


def test_triplet_needs_skip_plus_k_negatives(tmp_path):
    shard_dir = shards(tmp_path)
    triplet = {"name": "triplet", "skip": 1, "k": 9}
    assert problems(run_config(10, triplet), shard_dir) == [
        "params.yaml: runs.r.method.k: skip 1 + k 9 needs 10 negatives per anchor, but a "
        "per-step batch of 10 has 9 (train.batch_size 10)"]
    assert problems(run_config(11, triplet), shard_dir) == []
    auto = {"name": "triplet", "skip": "auto", "expected_classes": 2, "k": 4}
    [line] = problems(run_config(8, auto), shard_dir)
    assert line.startswith("params.yaml: runs.r.method.k: skip: auto (")


@pytest.mark.parametrize("rows", [9, 10])
def test_the_boundaries_are_the_methods_own(tmp_path, rows):
    """The check fails exactly where the worker-side code would (one worker)."""
    shard_dir = shards(tmp_path)
    features = torch.randn(rows, 4)
    dsa_flagged = bool(problems(run_config(rows, regulator={"name": "dsa", "k": 9}),
                                shard_dir))
    triplet_flagged = bool(problems(run_config(rows, {"name": "triplet", "skip": 1, "k": 8}),
                                    shard_dir))
    for flagged, worker_side in ((dsa_flagged, lambda: knn_indices(features, 9)),
                                 (triplet_flagged, lambda: truncated_triplet_loss(
                                     features, features, skip=1, k=8))):
        if flagged:
            with pytest.raises(ValueError):
                worker_side()
        else:
            worker_side()


def test_batch_workers_and_data(tmp_path):
    shard_dir = shards(tmp_path, train=100)
    assert problems(run_config(30), shard_dir, num_workers=4) == [
        "params.yaml: runs.r.train.batch_size: 30 is not divisible by ray.num_workers (4)"]
    assert problems(run_config(128), shard_dir) == [
        "params.yaml: runs.r.train.batch_size: 128 is larger than the pretraining data "
        "(train: 100 images)"]
    assert problems(run_config(16, data={"splits": ["train", "unlabeled"]}), shard_dir) == [
        f"params.yaml: runs.r.data.splits: 'unlabeled' is not a split of "
        f"{shard_dir / 'manifest.json'} (train, test)"]


def test_auto_holds_what_fits_the_budget_and_streams_the_rest(tmp_path):
    from pipeline.data.batches import chosen_loader

    shard_dir = shards(tmp_path, train=1 << 15, channels=1)  # 2 MiB decoded (8x8x1)
    assert chosen_loader(run_config(data={"memory_budget_mb": 2}), shard_dir) == "memory"
    assert chosen_loader(run_config(data={"memory_budget_mb": 1}), shard_dir) == "stream"
    assert problems(run_config(data={"memory_budget_mb": 1}), shard_dir) == []


def test_a_budget_that_cannot_be_met_is_one_line_naming_the_key(tmp_path):
    shard_dir = shards(tmp_path, train=1 << 15)
    forced = run_config(data={"loader": "memory", "memory_budget_mb": 1})
    assert problems(forced, shard_dir) == [
        "params.yaml: runs.r.data.memory_budget_mb: 1 MiB per rank, but the memory loader "
        "holds train on every rank: 2.0 MiB decoded; set data.loader: auto (or stream) to "
        "stream them, or raise the budget"]
    # streamed: 3 loader processes x (8192 buffered + 5 batches of 8) x 64 bytes
    streamed = run_config(data={"loader": "stream", "memory_budget_mb": 1, "workers": 3,
                                "shuffle_buffer": 8192})
    assert problems(streamed, shard_dir, num_workers=2) == [
        "params.yaml: runs.r.data.shuffle_buffer: 8192 images per loader process x 3 "
        "(data.workers), with prefetched batches: 1.5 MiB per rank, over "
        "data.memory_budget_mb (1 MiB); lower the buffer or data.workers, or raise the budget"]
    assert problems(streamed.model_copy(update={"data": streamed.data.model_copy(
        update={"shuffle_buffer": 4096})}), shard_dir, num_workers=2) == []


def test_gpus_per_worker_is_one_gpu_per_worker(tmp_path):
    shard_dir = shards(tmp_path)
    assert problems(run_config(), shard_dir, use_gpu=True, num_workers=2,
                    gpus_per_worker=0.5) == [
        "params.yaml: ray.gpus_per_worker: 0.5 lets 2 workers share a GPU, which NCCL cannot "
        "do; set 1 (one GPU per worker)"]
    [line] = problems(run_config(), shard_dir, use_gpu=True, gpus_per_worker=2)
    assert line.startswith("params.yaml: ray.gpus_per_worker: 2 GPUs per worker, but")
    assert problems(run_config(), shard_dir, use_gpu=True, gpus_per_worker=0.5) == []
    assert problems(run_config(), shard_dir, use_gpu=False, gpus_per_worker=2) == []


def test_prior_files_are_checked_before_ray(tmp_path):
    (tmp_path / "shards").mkdir()
    shard_dir = shards(tmp_path / "shards", channels=1)
    rgb = tmp_path / "rgb.pt"
    save_encoder(Encoder(run_config().backbone, 3, [0.5] * 3, [0.2] * 3), rgb)
    run = run_config(regulator={"name": "dsa", "k": 5, "prior": "checkpoint",
                                "prior_path": str(rgb)})
    assert problems(run, shard_dir) == [
        f"params.yaml: runs.r.regulator.prior_path: {rgb} takes 3-channel images, dataset "
        "'digits' has 1"]
    weights = tmp_path / "resnet18.pth"
    weights.write_bytes(b"\x80\x02not weights at all" * 10)
    run = run_config(regulator={"name": "dsa", "k": 5, "prior": "torchvision",
                                "prior_path": str(weights)})
    with pytest.raises(UserError, match=rf"^{weights}: not a PyTorch file"):
        check_run("r", run, RayConfig(), shard_dir)


def test_moco_queue_takes_whole_global_batches_and_at_most_every_image(tmp_path):
    shard_dir = shards(tmp_path, train=100)
    moco = {"name": "moco", "queue_size": 48}
    assert problems(run_config(32, moco), shard_dir) == [
        "params.yaml: runs.r.method.queue_size: 48 is not a multiple of the global batch "
        "(train.batch_size 32)"]
    assert problems(run_config(16, {**moco, "queue_size": 112}), shard_dir) == [
        "params.yaml: runs.r.method.queue_size: 112 keys exceed the 100 pretraining images "
        "(train)"]
    # the global batch, whatever the workers: every rank enqueues the gathered keys
    assert problems(run_config(16, moco), shard_dir, num_workers=2) == []

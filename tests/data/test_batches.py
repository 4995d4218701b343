"""Pretraining batches from memory and from streamed shards; the loop on a stream."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.data.batches import pretraining_batches
from pipeline.data.shards import write_shards
from pipeline.data.sources import load_source, make_splits
from pipeline.errors import UserError
from pipeline.params.data import SplitConfig, STL10Source
from pipeline.params.ray import RayConfig
from pipeline.params.training import RunConfig


def _run(**data) -> RunConfig:
    return RunConfig.model_validate({
        "dataset": "d", "backbone": {"name": "small_cnn", "width": 8},
        "method": {"name": "simclr"}, "train": {"batch_size": 4, "epochs": 1},
        "data": data})


@pytest.fixture
def stl_shards(stl10_dir, tmp_path) -> Path:
    path, _ = stl10_dir
    source = load_source(STL10Source(name="stl10", path=str(path)))
    out = tmp_path / "shards"
    out.mkdir()
    write_shards(make_splits(source, SplitConfig()), source.class_names, out, 2,
                 {"name": "stl10"})
    return out


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_train_and_unlabeled_give_the_same_steps_either_way(stl_shards, loader):
    run = _run(loader=loader, splits=["train", "unlabeled"], workers=0, shuffle_buffer=4)
    batches = pretraining_batches(run, stl_shards, 0, 1, torch.device("cpu"))
    assert batches.steps_per_epoch == 7 // 4
    got = list(batches.epoch(1))
    assert len(got) == 1 and got[0][0].shape == (4, 3, 96, 96)
    assert set(got[0][1].tolist()) <= {-1, 0, 1, 9}


def test_memory_ranks_split_each_global_batch(digits_shards):
    run = _run(loader="memory").model_copy(update={"train": _run().train.model_copy(
        update={"batch_size": 64})})
    whole = list(pretraining_batches(run, digits_shards, 0, 1, torch.device("cpu")).epoch(2))
    halves = [list(pretraining_batches(run, digits_shards, r, 2, torch.device("cpu")).epoch(2))
              for r in (0, 1)]
    for full, first, second in zip(whole, *halves, strict=True):
        assert torch.cat([first[1], second[1]]).equal(full[1])


def test_fewer_images_than_a_batch_is_a_user_error(stl_shards):
    run = _run(splits=["train"]).model_copy(update={"train": _run().train.model_copy(
        update={"batch_size": 64})})
    with pytest.raises(UserError, match="fewer images than one batch of 64"):
        pretraining_batches(run, stl_shards, 0, 1, torch.device("cpu"))


@pytest.mark.slow
def test_pretraining_on_a_stream_with_two_workers(ray_cluster, digits_shards, tmp_path):
    from pipeline.train.launcher import pretrain

    run = RunConfig.model_validate({
        "dataset": "digits", "backbone": {"name": "small_cnn", "width": 8},
        "method": {"name": "simclr"}, "train": {"batch_size": 128, "epochs": 2},
        "data": {"loader": "stream", "workers": 1, "shuffle_buffer": 256}})
    result = pretrain("stream", run, digits_shards,
                      RayConfig(num_workers=2, cpus_per_worker=1,
                                storage_path=str(tmp_path / "ray")))
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert all(row["skipped_shards"] == 0 for row in result.history)
    assert torch.isfinite(torch.tensor([row["loss"] for row in result.history])).all()

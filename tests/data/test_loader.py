"""The streaming reader: coverage, seeding, corrupt shards, and 2 Ray workers x 2 loader
workers over fewer shards than readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.data.loader import StreamLoader, StreamSpec, reader_shards
from pipeline.data.reader import split_shards
from pipeline.errors import UserError


def _loader(shard_dir: Path, batch: int, workers: int = 0, seed: int = 0, **kw) -> StreamLoader:
    shards, _, decoding = split_shards(shard_dir, ["train"])
    return StreamLoader(StreamSpec(tuple(shards), decoding, batch, seed=seed, **kw), workers)


@pytest.mark.parametrize(("num_shards", "readers"), [(6, 4), (3, 4), (8, 8), (2, 5)])
def test_each_cycle_covers_every_shard_and_no_reader_idles(num_shards, readers):
    for cycle in range(3):
        assigned = [reader_shards(num_shards, r, readers, seed=1, cycle=cycle)
                    for r in range(readers)]
        assert all(assigned)
        assert sorted({s for shards in assigned for s in shards}) == list(range(num_shards))
        assert sum(map(len, assigned)) == max(num_shards, readers)


def test_one_reader_epoch_without_buffer_reads_each_shard_once(numbered_shards):
    batches = [y.tolist() for _, y in _loader(numbered_shards, 12, shuffle_buffer=0).epoch(0, 5)]
    labels = [label for batch in batches for label in batch]
    assert sorted(labels) == list(range(60))
    shard_order = [label // 10 for label in labels[::10]]
    assert shard_order != sorted(shard_order)  # shards come in a seeded random order


def test_shuffle_buffer_is_seeded(numbered_shards):
    def epoch(seed: int) -> list[int]:
        loader = _loader(numbered_shards, 12, seed=seed, shuffle_buffer=20)
        return [label for _, y in loader.epoch(0, 5) for label in y.tolist()]

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert first == again and first != other
    # What is left in the buffer when the epoch's batches are taken is not seen this epoch,
    # so an epoch is nearly (not exactly) one pass.
    assert len(set(first)) >= 50


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epochs_batches_depend_on_the_epoch_alone(numbered_shards, workers):
    """What makes resuming a streamed run at an epoch boundary exact: epoch 3 read by a
    fresh loader is epoch 3 read after epochs 1 and 2, and differs from epoch 2."""
    def labels(loader: StreamLoader, epoch: int) -> list[list[int]]:
        return [y.tolist() for _, y in loader.epoch(epoch, 4)]

    running = _loader(numbered_shards, 12, workers=workers, shuffle_buffer=20)
    epochs = [labels(running, epoch) for epoch in (1, 2, 3)]
    fresh = _loader(numbered_shards, 12, workers=workers, shuffle_buffer=20)
    assert labels(fresh, 3) == epochs[2] != epochs[1]


def test_images_match_labels_through_two_loader_workers(numbered_shards):
    loader = _loader(numbered_shards, 8, workers=2, shuffle_buffer=16)
    for images, labels in loader.epoch(0, 10):
        assert images.shape == (8, 1, 4, 4)
        assert (images[:, 0, 0, 0].long() == labels).all()


def _truncate(shard: Path, keep: int) -> None:
    shard.write_bytes(shard.read_bytes()[:keep])


def test_corrupt_shard_stops_with_its_name(numbered_shards):
    _truncate(numbered_shards / "train-000002.tar", 3000)
    loader = _loader(numbered_shards, 10, workers=2, shuffle_buffer=0)
    with pytest.raises(UserError, match=r"train-000002\.tar: corrupt shard .*on_corrupt: skip"):
        for _ in loader.epoch(0, 30):
            pass


def test_shard_cut_at_a_member_boundary_is_still_caught(numbered_shards):
    _truncate(numbered_shards / "train-000004.tar", 512 * 8)  # 2 whole samples, no EOF marker
    with pytest.raises(UserError, match=r"train-000004\.tar: corrupt shard \(sha256 differs"):
        for _ in _loader(numbered_shards, 10).epoch(0, 30):
            pass


def test_skip_mode_drops_and_counts_corrupt_shards(numbered_shards):
    (numbered_shards / "train-000001.tar").write_bytes(b"not a tar file at all" * 40)
    loader = _loader(numbered_shards, 10, on_corrupt="skip", shuffle_buffer=0)
    labels = [y for _, y in loader.epoch(0, 10)]
    assert len(labels) == 10 and all(len(y) == 10 for y in labels)
    assert not any(10 <= int(label) < 20 for y in labels for label in y)
    assert loader.skipped_shards == 2  # two cycles of 5 good shards each


def test_skip_mode_fails_when_every_shard_is_corrupt(numbered_shards):
    for shard in numbered_shards.glob("*.tar"):
        _truncate(shard, 100)
    with pytest.raises(UserError, match="every shard is corrupt"):
        for _ in _loader(numbered_shards, 10, on_corrupt="skip").epoch(0, 1):
            pass


def test_two_ray_workers_two_loader_workers_fewer_shards_than_readers(ray_cluster, tmp_path,
                                                                       numbered_shards):
    from ray.train import RunConfig as RayRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.params.training import RunConfig

    # Defined here so Ray pickles it by value (workers cannot import test modules).
    def _count_batches(config: dict) -> None:
        """Ray Train worker: stream with the run's data params and record the batch count."""
        import ray.train
        import torch

        from pipeline.data.batches import pretraining_batches
        from pipeline.params.training import RunConfig

        context = ray.train.get_context()
        rank, world = context.get_world_rank(), context.get_world_size()
        run = RunConfig.model_validate(config["run"])
        batches = pretraining_batches(run, Path(config["shard_dir"]), rank, world,
                                      torch.device("cpu"))
        counts, labels = [], []
        for epoch in (1, 2):
            batch_list = list(batches.epoch(epoch))
            counts.append(len(batch_list))
            labels += [y.tolist() for _, y in batch_list]
            assert all(len(y) == run.train.batch_size // world for _, y in batch_list)
        Path(config["out"], f"rank{rank}.json").write_text(json.dumps(
            {"counts": counts, "steps": batches.steps_per_epoch, "labels": labels}))

    run = RunConfig.model_validate({
        "dataset": "numbers", "backbone": {"name": "small_cnn"}, "method": {"name": "random"},
        "train": {"batch_size": 8},
        "data": {"loader": "stream", "workers": 2, "shuffle_buffer": 8}})
    out = tmp_path / "counts"
    out.mkdir()
    (numbered_shards / "train-000003.tar").unlink()  # shards 0-2 stay: 3 shards, 4 readers
    manifest_path = numbered_shards / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["splits"]["train"]["shards"] = manifest["splits"]["train"]["shards"][:3]
    manifest_path.write_text(json.dumps(manifest))
    trainer = TorchTrainer(
        _count_batches,
        train_loop_config={"run": run.model_dump(mode="json"), "out": str(out),
                           "shard_dir": str(numbered_shards)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RayRunConfig(storage_path=str(tmp_path / "ray")),
    )
    trainer.fit()
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 30 // 8
    assert ranks[0]["counts"] == ranks[1]["counts"] == [3, 3]
    seen = {label for rank in ranks for batch in rank["labels"] for label in batch}
    assert seen <= set(range(30)) and len(seen) > 15

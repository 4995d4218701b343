"""Fine-tuning the whole encoder on real digits shards, from an untrained encoder file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from pipeline.data.reader import read_split, split_batches
from pipeline.data.shards import read_manifest
from pipeline.evaluate.finetune import (
    MemoryTrainBatches,
    StreamedTrainBatches,
    augment,
    finetune,
    finetune_split,
    split_classes,
    train_batches,
)
from pipeline.nets.backbones import Encoder, load_encoder, save_encoder
from pipeline.params.evaluation import FinetuneConfig
from pipeline.params.methods import SmallCNNBackbone

CFG = FinetuneConfig(epochs=4, batch_size=64, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory, digits_shards: Path) -> Path:
    """An untrained small convnet saved as the pretrain stage saves encoders."""
    manifest = read_manifest(digits_shards)
    torch.manual_seed(0)
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=8), manifest["image_shape"][2],
                      manifest["channel_mean"], manifest["channel_std"])
    path = tmp_path_factory.mktemp("models") / "encoder.pt"
    save_encoder(encoder, path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def in_memory(shards: Path, train: str, test: str, cfg: FinetuneConfig):
    """finetune's arguments with the training split held in memory."""
    return (MemoryTrainBatches(read_split(shards, train), cfg.batch_size, cfg.seed),
            split_batches(shards, test, cfg.batch_size), split_classes(shards, [train, test]))


def test_finetuning_a_random_encoder_learns_the_classes_and_leaves_its_file(
        encoder_file: Path, digits_shards: Path):
    before = sha256(encoder_file)
    encoder = load_encoder(encoder_file)
    initial = {k: v.clone() for k, v in encoder.state_dict().items()}
    lines: list[str] = []

    metrics = finetune(encoder, *in_memory(digits_shards, "train", "test", CFG), CFG,
                       log=lines.append)

    # 7 classes (digits 0-6): chance is 1/7; the random head before training scores that
    assert metrics["finetune_top1"] > 0.8
    assert metrics["finetune_top1"] <= metrics["finetune_top5"] <= 1.0
    assert len(lines) == CFG.epochs and lines[-1].startswith("finetune epoch 4/4 loss")
    assert metrics["finetune_train_loss"] < 1.0  # cross-entropy at chance is ln 7 = 1.95
    changed = [k for k, v in encoder.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert "backbone.0.0.weight" in changed  # gradients reached the first conv
    assert sha256(encoder_file) == before
    reloaded = load_encoder(encoder_file).state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in initial.items())


def test_finetuning_is_seeded(encoder_file: Path, digits_shards: Path):
    cfg = CFG.model_copy(update={"epochs": 1})

    def run(cfg: FinetuneConfig) -> dict[str, float]:
        data = in_memory(digits_shards, "transfer_train", "transfer_test", cfg)
        return finetune(load_encoder(encoder_file), *data, cfg)

    runs = [run(cfg) for _ in range(2)]
    assert runs[0] == runs[1]
    other = run(cfg.model_copy(update={"seed": 1}))
    assert other["finetune_train_loss"] != runs[0]["finetune_train_loss"]


def test_the_training_split_is_held_within_the_budget_and_streamed_above(digits_shards):
    train_bytes = 8 * 8 * read_manifest(digits_shards)["splits"]["train"]["count"]
    held = train_batches(digits_shards, "train", 64, 0, train_bytes, shuffle_buffer=100)
    streamed = train_batches(digits_shards, "train", 64, 0, train_bytes - 1, 100)
    assert isinstance(held, MemoryTrainBatches) and isinstance(streamed, StreamedTrainBatches)
    assert held.steps_per_epoch == streamed.steps_per_epoch > 0
    for batches in (held, streamed):  # every epoch: full batches of known classes
        for _ in range(2):
            labels = torch.cat([y for _, y in batches.epoch()])
            assert len(labels) == batches.steps_per_epoch * 64
            assert set(labels.tolist()) <= set(range(7))


def test_a_streamed_training_split_fine_tunes_too(encoder_file: Path, digits_shards: Path):
    cfg = CFG.model_copy(update={"epochs": 2})

    def run(budget: int) -> dict[str, float]:
        return finetune_split(load_encoder(encoder_file), digits_shards, "train", "test",
                              cfg, budget, shuffle_buffer=200)

    streamed, again, held = run(0), run(0), run(1 << 30)
    assert streamed == again  # the shuffle buffer is seeded
    assert streamed["finetune_top1"] > 0.6
    assert streamed["finetune_train_loss"] != held["finetune_train_loss"]  # another order


def test_augmentation_off_is_the_identity_and_flip_mirrors():
    images = torch.rand(4, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    plain = FinetuneConfig(crop_scale=None)
    assert augment(images, plain, generator) is images
    flipped = augment(images, plain.model_copy(update={"flip": 1.0}), generator)
    assert torch.allclose(flipped, images.flip(-1), atol=1e-6)
    cropped = augment(images, FinetuneConfig(crop_scale=(0.25, 0.25)), generator)
    assert cropped.shape == images.shape and not torch.allclose(cropped, images, atol=0.05)

"""Reading splits one shard at a time, in fixed per-shard batches; features streamed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.data.reader import (
    read_split,
    read_splits,
    shard_batches,
    split_batches,
    split_bytes,
    split_shards,
)
from pipeline.errors import UserError
from pipeline.nets.backbones import Encoder
from pipeline.nets.extract import extract_features, shard_features, split_features
from pipeline.params.methods import SmallCNNBackbone


def test_batches_never_span_shards_and_keep_key_order(numbered_shards: Path):
    sizes = [len(b.labels) for b in split_batches(numbered_shards, "train", 4)]
    assert sizes == [4, 4, 2] * 6  # 6 shards of 10
    labels = torch.cat([b.labels for b in split_batches(numbered_shards, "train", 4)])
    assert labels.tolist() == list(range(60))
    for batch in split_batches(numbered_shards, "train", 4):
        assert (batch.images[:, 0, 0, 0].long() == batch.labels).all()


def test_limit_stops_reading_at_the_first_images(numbered_shards: Path):
    (numbered_shards / "train-000003.tar").write_bytes(b"never read")
    labels = torch.cat([b.labels for b in split_batches(numbered_shards, "train", 4, 23)])
    assert labels.tolist() == list(range(23))
    with pytest.raises(UserError, match=r"train-000003\.tar: sha256 differs from the manifest"):
        list(split_batches(numbered_shards, "train", 4, 31))


def test_read_split_is_the_batches_concatenated(numbered_shards: Path):
    whole = read_split(numbered_shards, "train")
    parts = list(split_batches(numbered_shards, "train", 7))
    assert torch.equal(whole.images, torch.cat([p.images for p in parts]))
    assert torch.equal(whole.labels, torch.cat([p.labels for p in parts]))
    assert split_bytes(numbered_shards, ["train"]) == whole.images.numel() == 60 * 16


def test_read_splits_is_each_split_in_turn(digits_shards: Path):
    both = read_splits(digits_shards, ["train", "test"])
    train, test = read_split(digits_shards, "train"), read_split(digits_shards, "test")
    assert torch.equal(both.images, torch.cat([train.images, test.images]))
    assert torch.equal(both.labels, torch.cat([train.labels, test.labels]))
    # the layout of the streamed batches (one channel: NHWC strides), so the same kernels
    streamed = next(iter(split_batches(digits_shards, "train", 64))).images
    assert both.images.stride()[1:] == train.images.stride()[1:] == streamed.stride()[1:]


def test_wrong_count_is_named(numbered_shards: Path):
    shards, _, decoding = split_shards(numbered_shards, ["train"])
    short = type(shards[0])(shards[0].url, 11, shards[0].sha256)
    with pytest.raises(UserError, match=r"train-000000\.tar: 10 samples, the manifest says 11"):
        list(shard_batches(short, decoding, 4))


def _encoder(channels: int) -> Encoder:
    torch.manual_seed(0)
    return Encoder(SmallCNNBackbone(name="small_cnn", width=4), channels, [0.5] * channels,
                   [0.25] * channels)


def test_features_of_a_list_of_shards_are_each_shards_concatenated(digits_shards: Path):
    encoder = _encoder(1)
    shards, _, decoding = split_shards(digits_shards, ["train"])
    assert len(shards) > 1
    together, labels = shard_features(encoder, shards, decoding, 64, "cpu")
    parts = [shard_features(encoder, [shard], decoding, 64, "cpu") for shard in shards]
    assert torch.equal(together, torch.cat([f for f, _ in parts]))  # bitwise, on CPU
    assert torch.equal(labels, torch.cat([y for _, y in parts]))
    data = read_split(digits_shards, "train")
    assert torch.equal(labels, data.labels)
    torch.testing.assert_close(together, extract_features(encoder, data.images, 64, "cpu"))
    first, first_labels = split_features(encoder, digits_shards, "train", 64, "cpu", limit=100)
    assert torch.equal(first, together[:100]) and torch.equal(first_labels, labels[:100])

import json

import numpy as np
import pytest
import torch

from pipeline.data.shards import read_manifest, read_split, sha256_file, write_shards
from pipeline.data.sources import load_source, make_splits
from pipeline.errors import UserError
from pipeline.params import DigitsSource, SplitConfig


def test_manifest_counts_cover_all_1797_digits(digits_shards):
    manifest = read_manifest(digits_shards)
    assert manifest["total"] == 1797
    assert sum(split["count"] for split in manifest["splits"].values()) == 1797
    for split in manifest["splits"].values():
        assert sum(split["classes"].values()) == split["count"]
        assert sum(shard["count"] for shard in split["shards"]) == split["count"]
    held_out = set(manifest["splits"]["transfer_train"]["classes"])
    assert held_out == {"7", "8", "9"}
    assert held_out.isdisjoint(manifest["splits"]["train"]["classes"])
    assert manifest["image_shape"] == [8, 8, 1]


def test_round_trip_returns_the_source_images(digits_shards):
    source = load_source(DigitsSource(name="digits"))
    splits = make_splits(source, SplitConfig(heldout_classes=[7, 8, 9]))
    for name in ("train", "transfer_test"):
        data = read_split(digits_shards, name)
        expected = splits[name]
        order = np.argsort(expected.keys)
        expected_images = torch.from_numpy(expected.images[order]).permute(0, 3, 1, 2)
        assert torch.equal(data.images, expected_images)
        assert data.labels.tolist() == expected.labels[order].tolist()


def test_split_is_stratified_and_seeded():
    source = load_source(DigitsSource(name="digits"))
    first = make_splits(source, SplitConfig(seed=1))
    second = make_splits(source, SplitConfig(seed=1))
    other = make_splits(source, SplitConfig(seed=2))
    assert np.array_equal(first["test"].keys, second["test"].keys)
    assert not np.array_equal(first["test"].keys, other["test"].keys)
    fractions = np.bincount(first["test"].labels) / np.bincount(source.splits["all"].labels)
    assert np.allclose(fractions, 0.3, atol=0.02)


def test_shards_are_byte_reproducible(tmp_path, digits_shards):
    source = load_source(DigitsSource(name="digits"))
    splits = make_splits(source, SplitConfig(heldout_classes=[7, 8, 9]))
    write_shards(splits, source.class_names, tmp_path, 500, {"name": "digits"})
    manifest = (digits_shards / "manifest.json").read_bytes()
    assert (tmp_path / "manifest.json").read_bytes() == manifest
    for path in sorted(digits_shards.glob("*.tar")):
        assert sha256_file(tmp_path / path.name) == sha256_file(path)


def test_corrupt_shard_is_named(tmp_path, digits_shards):
    for path in digits_shards.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    shard = tmp_path / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    with pytest.raises(UserError, match="train-000000.tar: sha256 differs"):
        read_split(tmp_path, "train")
    with pytest.raises(UserError, match="train-000000.tar: (unreadable shard|.* samples)"):
        read_split(tmp_path, "train", verify=False)


def test_missing_manifest_and_split(tmp_path, digits_shards):
    with pytest.raises(UserError, match="manifest.json: shard manifest not found"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"splits": {}, "image_shape": [8, 8, 1]}))
    with pytest.raises(UserError, match="no split 'train'"):
        read_split(tmp_path, "train")

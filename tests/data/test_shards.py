"""Shards: byte-reproducible under any number of writers, manifests, encoded members,
round trips of the embedded default, corruption."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.codec import Decoding, decode_image
from pipeline.data.shards import read_manifest, read_split, write_shards
from pipeline.data.sources import load_source, make_splits
from pipeline.errors import UserError
from pipeline.io import sha256_file
from pipeline.params import DigitsSource, ImageFolderSource, SplitConfig, STL10Source


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

def _shard(source_cfg, out: Path, per_shard: int, workers: int,
           split: SplitConfig | None = None) -> dict:
    source = load_source(source_cfg)
    out.mkdir()
    splits = make_splits(source, split or SplitConfig())
    return write_shards(splits, source.class_names, out, per_shard,
                        source_cfg.model_dump(mode="json"), decoding=source.decoding,
                        storage=source.storage, workers=workers)


def test_sharding_twice_gives_identical_hashes(imagefolder_dir, tmp_path):
    cfg = ImageFolderSource(name="imagefolder", path=str(imagefolder_dir), image_size=16)
    first = _shard(cfg, tmp_path / "a", 5, workers=1)
    second = _shard(cfg, tmp_path / "b", 5, workers=2)
    assert first == second
    shards = sorted(p.name for p in (tmp_path / "a").glob("*.tar"))
    assert len(shards) == 4  # train 12 -> 3 shards, test 4 -> 1
    for name in shards:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_manifest_counts_classes_shape_and_unlabeled(stl10_dir, tmp_path):
    path, arrays = stl10_dir
    manifest = _shard(STL10Source(name="stl10", path=str(path)), tmp_path / "s", 2, 2,
                      SplitConfig(heldout_classes=[9]))
    assert manifest["image_shape"] == [96, 96, 3] and manifest["storage"] == "raw"
    assert manifest["splits"]["train"]["classes"] == {"0": 2, "1": 1}
    assert manifest["splits"]["unlabeled"] == {
        **manifest["splits"]["unlabeled"], "count": 3, "labeled": False, "classes": {"-1": 3}}
    assert [s["count"] for s in manifest["splits"]["unlabeled"]["shards"]] == [2, 1]
    all_pixels = np.concatenate([a.reshape(-1, 3) for a in arrays.values()]) / 255.0
    np.testing.assert_allclose(manifest["channel_mean"], all_pixels.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(manifest["channel_std"], all_pixels.std(axis=0), atol=1e-6)
    unlabeled = read_split(tmp_path / "s", "unlabeled")
    assert unlabeled.labels.tolist() == [-1, -1, -1]
    np.testing.assert_array_equal(unlabeled.images.permute(0, 2, 3, 1).numpy(),
                                  arrays["unlabeled"])


def test_png_stored_raw_jpeg_stored_encoded(imagefolder_dir, tmp_path):
    raw = _shard(ImageFolderSource(name="imagefolder", path=str(imagefolder_dir),
                                   image_size=16, storage="raw"), tmp_path / "raw", 100, 1)
    encoded = _shard(ImageFolderSource(name="imagefolder", path=str(imagefolder_dir),
                                       image_size=16, storage="encoded"), tmp_path / "enc", 100, 1)
    assert raw["storage"] == "raw" and encoded["storage"] == "encoded"
    with tarfile.open(tmp_path / "enc" / "test-000000.tar") as tar:
        names = tar.getnames()
        first_jpg = tar.extractfile(next(n for n in names if n.endswith(".jpg"))).read()
    assert {n.rsplit(".", 1)[1] for n in names} == {"png", "jpg", "cls"}
    originals = [p.read_bytes() for p in sorted(imagefolder_dir.glob("test/*/*.JPEG"))]
    assert first_jpg in originals  # original bytes, not re-encoded
    from_raw, from_encoded = read_split(tmp_path / "raw", "train"), read_split(tmp_path / "enc",
                                                                               "train")
    assert from_raw.images.equal(from_encoded.images)
    png = sorted(imagefolder_dir.glob("train/ant/*.png"))[0]
    assert decode_image(png.read_bytes(), Decoding(16, 3)).tolist() == \
        from_raw.images[1].permute(1, 2, 0).numpy().tolist()  # 0.JPEG, 0.png, ... by name


@pytest.mark.parametrize("payload", [b"\x89PNG\r\n\x1a\n truncated", b"no image format at all"])
def test_unreadable_image_is_named_at_shard_time(imagefolder_dir, tmp_path, payload):
    bad = imagefolder_dir / "train" / "cat" / "9.png"
    bad.write_bytes(payload)
    with pytest.raises(UserError, match=r"train/cat/9\.png: not a readable image") as info:
        _shard(ImageFolderSource(name="imagefolder", path=str(imagefolder_dir), image_size=16),
               tmp_path / "s", 4, 2)
    assert "0x" not in str(info.value)  # PIL names its buffer by address: differs every run


def test_corrupt_shard_is_named_when_read(digits_shards, tmp_path):
    import shutil

    copy = tmp_path / "shards"
    shutil.copytree(digits_shards, copy)
    shard = copy / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[5000:5100] = b"\xff" * 100
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"train-000001\.tar: sha256 differs"):
        read_split(copy, "train")
    shard.write_bytes(bytes(data[:3000]))
    with pytest.raises(UserError, match=r"train-000001\.tar: (unreadable shard|\d+ samples)"):
        read_split(copy, "train", verify=False)

"""Shards: byte-reproducible whoever writes them, manifests, encoded members,
round trips of the embedded default, corruption, and the scale controls (image_size,
max_per_class) of every source through the shard stage (on the session's Ray)."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.codec import Decoding, decode_image, resize_array
from pipeline.data.reader import read_split
from pipeline.data.shards import read_manifest, write_shards
from pipeline.data.sources import load_source, make_splits
from pipeline.errors import UserError
from pipeline.io import sha256_file
from pipeline.params.data import (
    DatasetConfig,
    DigitsSource,
    ImageFolderSource,
    SplitConfig,
    STL10Source,
)
from pipeline.params.ray import RayConfig
from pipeline.params.schema import validate_params
from pipeline.resolved.shard import ShardParams
from stages import params as params_stage
from stages import shard as shard_stage

FASHION = Path("/usr/share/datasets/fashion-mnist")


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

def _shard(source_cfg, out: Path, per_shard: int, split: SplitConfig | None = None,
           image_size: int = 16) -> dict:
    source = load_source(source_cfg, image_size)
    out.mkdir()
    splits = make_splits(source, split or SplitConfig())
    return write_shards(splits, source.class_names, out, per_shard,
                        source_cfg.model_dump(mode="json"), decoding=source.decoding,
                        storage=source.storage)


def test_sharding_twice_gives_identical_hashes(imagefolder_dir, tmp_path):
    cfg = ImageFolderSource(name="imagefolder", path=str(imagefolder_dir))
    first = _shard(cfg, tmp_path / "a", 5)
    second = _shard(cfg, tmp_path / "b", 5)
    assert first == second
    shards = sorted(p.name for p in (tmp_path / "a").glob("*.tar"))
    assert len(shards) == 4  # train 12 -> 3 shards, test 4 -> 1
    for name in shards:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_manifest_counts_classes_shape_and_unlabeled(stl10_dir, tmp_path):
    path, arrays = stl10_dir
    manifest = _shard(STL10Source(name="stl10", path=str(path)), tmp_path / "s", 2,
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
                                   storage="raw"), tmp_path / "raw", 100)
    encoded = _shard(ImageFolderSource(name="imagefolder", path=str(imagefolder_dir),
                                       storage="encoded"), tmp_path / "enc", 100)
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
        _shard(ImageFolderSource(name="imagefolder", path=str(imagefolder_dir)),
               tmp_path / "s", 4)
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


def test_resize_is_antialiased_and_follows_the_file_rule(tmp_path):
    checkerboard = (np.indices((28, 28)).sum(axis=0) % 2 * 255).astype(np.uint8)[..., None]
    small = resize_array(checkerboard, 7)
    assert small.shape == (7, 7, 1) and small.dtype == np.uint8
    assert np.abs(small.astype(int) - 128).max() <= 2  # averaged, not aliased to 0 or 255
    assert resize_array(checkerboard, 28) is checkerboard  # native size: untouched
    colour = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "c.png")
    from_file = decode_image((tmp_path / "c.png").read_bytes(), Decoding(12, 3))
    assert np.array_equal(resize_array(colour, 12), from_file)  # one rule for every source


# Per source: the fixture with its files (None: no files needed), the dataset entry's scale
# controls (every capped split has a choice to make), and the channels.
SCALED = {
    "digits": (None, {"split": {"heldout_classes": [7, 8, 9]}, "image_size": 12,
                      "max_per_class": {"train": 20, "test": 8, "transfer_train": 10,
                                        "transfer_test": 5}}, 1),
    "fashion_mnist": (None, {"split": {"heldout_classes": [9]}, "image_size": 14,
                             "max_per_class": {"train": 20, "test": 10, "transfer_train": 5,
                                               "transfer_test": 5}}, 1),
    # 3 train and 1 test image per class
    "mnist": ("idx_dir", {"split": {"heldout_classes": [9]}, "image_size": 14,
                          "max_per_class": {"train": 2, "test": 1, "transfer_train": 1}}, 1),
    # 2 train images per class, 1 test image of classes 0-3
    "cifar10": ("cifar10_dir", {"image_size": 8, "max_per_class": {"train": 1, "test": 1}}, 3),
    "cifar100": ("cifar100_three_classes_dir",
                 {"image_size": 8, "max_per_class": {"train": 2, "test": 1}}, 3),
    "stl10": ("stl10_three_classes_dir",
              {"image_size": 24, "max_per_class": {"train": 2, "unlabeled": 3}}, 3),
    # 6 train images per class (16x16 PNGs and non-square JPEGs), 2 test images per class
    "imagefolder": ("imagefolder_dir",
                    {"image_size": 12, "max_per_class": {"train": 2, "test": 1}}, 3),
}


def _scaled_source(name: str, fixture: str | None, request: pytest.FixtureRequest) -> dict:
    """The source entry, on the fixture's files in the source's format (or the real ones)."""
    if name == "fashion_mnist" and not FASHION.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    if fixture is None:
        return {"name": name}
    files = request.getfixturevalue(fixture)
    return {"name": name, "path": str(files[0] if isinstance(files, tuple) else files)}


def _shard_in(project: Path, entry: dict, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the real shard stage on `entry` in `project`; return its shard directory."""
    project.mkdir(parents=True)
    monkeypatch.chdir(project)
    dataset = validate_params({"datasets": {"d": entry}, "runs": {}}).datasets["d"]
    shard_stage.main(ShardParams(dataset=dataset), "d", RayConfig())  # the session's Ray
    return project / "data" / "shards" / "d"


def _member_keys(shard_dir: Path, split: str) -> list[str]:
    keys = []
    for record in read_manifest(shard_dir)["splits"][split]["shards"]:
        with tarfile.open(shard_dir / record["file"]) as tar:
            keys += [name.split(".")[0] for name in tar.getnames() if name.endswith(".cls")]
    return keys


@pytest.mark.parametrize("name", list(SCALED))
def test_scale_controls_of_every_source(name, request, tmp_path, monkeypatch, ray_cluster):
    fixture, scale, channels = SCALED[name]
    entry = {"source": _scaled_source(name, fixture, request),
             "shards": {"samples_per_shard": 7}, **scale}
    size, caps = scale["image_size"], scale["max_per_class"]
    runs = tmp_path / "runs"

    first = _shard_in(runs / "a", entry, monkeypatch)
    twice = _shard_in(runs / "b", entry, monkeypatch)
    reseeded = _shard_in(runs / "c", {**entry, "split": {**scale.get("split", {}), "seed": 1}},
                         monkeypatch)

    files = sorted(path.name for path in first.iterdir())
    assert files == sorted(path.name for path in twice.iterdir())
    for file in files:  # same params, tasks on 2 CPUs in any order: the same bytes
        assert sha256_file(first / file) == sha256_file(twice / file), file
    manifest = read_manifest(first)
    assert manifest["image_shape"] == [size, size, channels]
    assert manifest["image_size"] == size and manifest["max_per_class"] == caps

    cfg = DatasetConfig.model_validate(entry)
    for split, data in make_splits(load_source(cfg.source, size), cfg.split).items():
        labels, available = np.unique(data.labels, return_counts=True)
        cap = caps.get(split, len(data))
        expected = {str(label): min(cap, int(n))
                    for label, n in zip(labels, available, strict=True)}
        assert manifest["splits"][split]["classes"] == expected, split
        if expected:
            assert read_split(first, split).images.shape[1:] == (channels, size, size)
    assert any(_member_keys(first, split) != _member_keys(reseeded, split)
               for split in caps), "another split.seed must draw another subset"


@pytest.mark.parametrize(("entry", "line"), [
    ({"source": {"name": "digits"}, "max_per_class": {"train": 5, "validation": 5}},
     "datasets.d.max_per_class.validation: must be one of 'train', 'test', 'unlabeled'"),
    ({"source": {"name": "imagefolder", "path": "folder"}},
     "datasets.d.image_size: required key is missing"),
    ({"source": {"name": "digits"}, "max_per_class": {"unlabeled": 5}},
     "datasets.d.max_per_class: unlabeled: this source has no unlabeled split"),
])
def test_scale_params_errors_stop_the_stage_in_one_line(entry, line, tmp_path, monkeypatch,
                                                        capsys):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"datasets": {"d": entry}, "runs": {}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["params", "--params", str(params)])
    with pytest.raises(SystemExit) as exit_info:
        params_stage.cli()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{params}: {line}"), lines
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]

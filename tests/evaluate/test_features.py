"""The features stage's on-disk format: feature shards and their manifest round-trip
exactly, and a missing, foreign or inconsistent piece is one UserError line naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from pipeline.evaluate.features import (
    iter_features,
    load_features,
    write_feature_shard,
    write_manifest,
)


def write_split(directory, sizes=(3, 2), dim=4):
    generator = torch.Generator().manual_seed(0)
    parts = [(torch.randn(n, dim, generator=generator), torch.arange(n) + 10 * i)
             for i, n in enumerate(sizes)]
    records = [write_feature_shard(directory, f"s3://bucket/data/train-{i:06d}.tar", x, y)
               for i, (x, y) in enumerate(parts)]
    write_manifest(directory, records, dim)
    return parts


def test_shards_round_trip_in_order(tmp_path):
    parts = write_split(tmp_path)
    features, labels = load_features(tmp_path)
    assert torch.equal(features, torch.cat([x for x, _ in parts]))
    assert torch.equal(labels, torch.cat([y for _, y in parts]))
    assert labels.dtype == torch.int64 and features.dtype == torch.float32
    assert [len(y) for _, y in iter_features(tmp_path)] == [3, 2]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["count"] == 5 and manifest["dim"] == 4
    assert [s["file"] for s in manifest["shards"]] == ["train-000000.npz", "train-000001.npz"]
    assert manifest["shards"][1]["source"] == "train-000001.tar"


def test_an_empty_split_loads_as_empty(tmp_path):
    write_manifest(tmp_path, [], 7)
    features, labels = load_features(tmp_path)
    assert features.shape == (0, 7) and labels.shape == (0,)


def test_missing_features_say_which_stage_to_run(tmp_path):
    with pytest.raises(UserError, match=r"manifest.json: cached features missing; run the "
                                        "features stage first$"):
        load_features(tmp_path / "train")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: (d / "train-000001.npz").unlink(),
     r"train-000001.npz: feature shard listed in the manifest is missing$"),
    (lambda d: (d / "train-000000.npz").write_bytes(b"PK\x03\x04 half"),
     r"train-000000.npz: unreadable feature shard \(BadZipFile\)$"),
    (lambda d: np.savez(d / "train-000000.npz", features=np.zeros((3, 5), np.float32),
                        labels=np.zeros(3, np.int64)),
     r"train-000000.npz: features \(3, 5\) and labels \(3,\), the manifest says 3 rows of 4$"),
    (lambda d: (d / "manifest.json").write_text("{"),
     r"manifest.json: not a features manifest \(JSONDecodeError"),
    (lambda d: (d / "manifest.json").write_text('{"format": 0, "dim": 4, "shards": []}'),
     r"manifest.json: features format 0, this pipeline reads 1; rerun the features stage$"),
])
def test_a_damaged_split_is_one_line_naming_the_file(tmp_path, damage, message):
    write_split(tmp_path)
    damage(tmp_path)
    with pytest.raises(UserError, match=message) as error:
        load_features(tmp_path)
    assert "\n" not in str(error.value)

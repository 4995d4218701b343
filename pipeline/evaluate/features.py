"""The features stage's output: one split's frozen features as a directory of feature
shards, one per input shard, plus a small manifest.

    features/<run>/seed_<s>/<dataset>/<split>/
        manifest.json          {"format", "count", "dim", "shards": [{"file", "count",
                                 "source"}]}, in the split's shard order
        <input shard stem>.npz  {"features": [n, D] float32, "labels": [n] int64}

Whoever extracts a shard (a Ray task on any node) returns exactly that shard's rows, so
the driver writes each one as it arrives and holds one shard's features at a time. A
reader reads the manifest and then only the splits (directories) it needs; `load_features`
concatenates one split's shards in manifest order. `.npz` holds plain arrays (loaded
without pickle) and is read by NumPy alone.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.io import write_json

MANIFEST = "manifest.json"
FORMAT = 1


@dataclass(frozen=True)
class FeatureShard:
    file: str  # within the split's directory
    count: int
    source: str  # the input shard it was extracted from


def feature_shard_name(source_url: str) -> str:
    """The feature shard's file name: the input shard's stem (`train-00003.tar` ->
    `train-00003.npz`)."""
    stem = source_url.rstrip("/").rsplit("/", 1)[-1]
    return f"{stem.removesuffix('.tar')}.npz"


def write_feature_shard(split_dir: Path, source_url: str, features: torch.Tensor,
                        labels: torch.Tensor) -> FeatureShard:
    """Write one input shard's features and labels; returns its manifest record."""
    name = feature_shard_name(source_url)
    with (split_dir / name).open("wb") as handle:
        np.savez(handle, features=features.numpy().astype(np.float32, copy=False),
                 labels=labels.numpy().astype(np.int64, copy=False))
    return FeatureShard(name, len(labels), source_url.rstrip("/").rsplit("/", 1)[-1])


def write_manifest(split_dir: Path, shards: list[FeatureShard], dim: int) -> None:
    """The split's manifest, written last: a directory without one is incomplete."""
    write_json(split_dir / MANIFEST, {
        "format": FORMAT, "dim": dim, "count": sum(s.count for s in shards),
        "shards": [{"file": s.file, "count": s.count, "source": s.source} for s in shards]})


def read_manifest(split_dir: str | Path) -> tuple[list[FeatureShard], int]:
    """A split's feature shards (in order) and feature dimension; a missing or foreign
    manifest is one UserError line naming it."""
    path = Path(split_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: cached features missing; run the features stage first")
    try:
        data = json.loads(path.read_text())
        shards = [FeatureShard(str(r["file"]), int(r["count"]), str(r["source"]))
                  for r in data["shards"]]
        dim = int(data["dim"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a features manifest ({type(exc).__name__}: {exc})"
                        ) from None
    if data.get("format") != FORMAT:
        raise UserError(f"{path}: features format {data.get('format')!r}, this pipeline "
                        f"reads {FORMAT}; rerun the features stage")
    return shards, dim


def read_feature_shard(split_dir: str | Path, shard: FeatureShard, dim: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One feature shard, checked against its manifest record."""
    path = Path(split_dir) / shard.file
    try:
        with np.load(path, allow_pickle=False) as arrays:
            features, labels = arrays["features"], arrays["labels"]
    except FileNotFoundError:
        raise UserError(f"{path}: feature shard listed in the manifest is missing") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path}: unreadable feature shard ({type(exc).__name__})") from None
    if features.shape != (shard.count, dim) or labels.shape != (shard.count,):
        raise UserError(f"{path}: features {features.shape} and labels {labels.shape}, the "
                        f"manifest says {shard.count} rows of {dim}")
    return torch.from_numpy(features), torch.from_numpy(labels)


def iter_features(split_dir: str | Path) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A split's features and labels shard by shard, in order (one shard in memory)."""
    shards, dim = read_manifest(split_dir)
    for shard in shards:
        yield read_feature_shard(split_dir, shard, dim)


def load_features(split_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split's features [N, D] and labels [N], its shards concatenated in order."""
    shards, dim = read_manifest(split_dir)
    parts = [read_feature_shard(split_dir, shard, dim) for shard in shards]
    if not parts:
        return torch.empty(0, dim), torch.empty(0, dtype=torch.int64)
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])

"""Webdataset tar shards: byte-reproducible writing, a manifest, and checked reading.

Each sample is two tar members, `<key>.npy` (uint8 [H, W, C], no pickle) and `<key>.cls`
(the integer label as ASCII). Members carry mtime 0 and fixed owners, and samples are
written in key order, so the same inputs always give the same sha256 per shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from pipeline.data.sources import ImageSet
from pipeline.errors import UserError

MANIFEST = "manifest.json"


def _encode_array(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(payload))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_split(data: ImageSet, out_dir: Path, split: str, samples_per_shard: int
                ) -> list[dict[str, Any]]:
    """Write one split as `<split>-NNNNNN.tar` shards in key order; return shard records."""
    order = np.argsort(data.keys, kind="stable")
    records = []
    for shard_index, start in enumerate(range(0, len(order), samples_per_shard)):
        path = out_dir / f"{split}-{shard_index:06d}.tar"
        chunk = order[start:start + samples_per_shard]
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in chunk:
                key = f"{int(data.keys[i]):09d}"
                _add_member(tar, f"{key}.npy", _encode_array(data.images[i]))
                _add_member(tar, f"{key}.cls", str(int(data.labels[i])).encode())
        records.append({"file": path.name, "count": len(chunk), "sha256": sha256_file(path)})
    return records


def write_shards(splits: dict[str, ImageSet], class_names: list[str], out_dir: Path,
                 samples_per_shard: int, source: dict[str, Any]) -> dict[str, Any]:
    """Write every split into `out_dir` and its manifest; return the manifest."""
    first = next(s for s in splits.values() if len(s))
    height, width, channels = first.images.shape[1:]
    all_images = np.concatenate([s.images for s in splits.values() if len(s)])
    pixels = all_images.reshape(-1, channels).astype(np.float64) / 255.0
    manifest: dict[str, Any] = {
        "source": source,
        "class_names": class_names,
        "image_shape": [int(height), int(width), int(channels)],
        "channel_mean": pixels.mean(axis=0).round(6).tolist(),
        "channel_std": pixels.std(axis=0).round(6).tolist(),
        "total": int(sum(len(s) for s in splits.values())),
        "splits": {},
    }
    for split, data in splits.items():
        labels, counts = np.unique(data.labels, return_counts=True)
        manifest["splits"][split] = {
            "count": len(data),
            "classes": {str(int(c)): int(n) for c, n in zip(labels, counts, strict=True)},
            "shards": write_split(data, out_dir, split, samples_per_shard),
        }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(shard_dir: str | Path) -> dict[str, Any]:
    path = Path(shard_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: shard manifest not found; run the shard stage first") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


@dataclass(frozen=True)
class SplitTensors:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]


def _decode(sample: dict[str, Any]) -> tuple[np.ndarray, int]:
    image = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
    return image, int(sample["cls"])


def read_split(shard_dir: str | Path, split: str, verify: bool = True) -> SplitTensors:
    """Read a whole split into memory with webdataset, in key order.

    With `verify`, each shard's sha256 is checked against the manifest first, so a
    truncated or altered shard is named instead of silently training on less data.
    """
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    if split not in manifest["splits"]:
        raise UserError(f"{shard_dir / MANIFEST}: no split '{split}'")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for record in manifest["splits"][split]["shards"]:
        path = shard_dir / record["file"]
        if not path.is_file():
            raise UserError(f"{path}: shard listed in the manifest is missing")
        if verify and sha256_file(path) != record["sha256"]:
            raise UserError(f"{path}: sha256 differs from the manifest (corrupt or modified)")
        try:
            # Every rank reads the whole split (the loop shards batches, not files).
            dataset = wds.WebDataset(str(path), shardshuffle=False, empty_check=False,
                                     nodesplitter=lambda urls: urls)
            decoded = [_decode(sample) for sample in dataset]
        except (tarfile.TarError, ValueError, KeyError, OSError) as exc:
            raise UserError(f"{path}: unreadable shard ({exc})") from None
        if len(decoded) != record["count"]:
            raise UserError(f"{path}: {len(decoded)} samples, manifest says {record['count']}")
        images.extend(image for image, _ in decoded)
        labels.extend(label for _, label in decoded)
    height, width, channels = manifest["image_shape"]
    if not images:
        return SplitTensors(torch.empty(0, channels, height, width, dtype=torch.uint8),
                            torch.empty(0, dtype=torch.int64))
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return SplitTensors(stacked, torch.tensor(labels, dtype=torch.int64))

"""Webdataset tar shards: byte-reproducible, written shard by shard, a manifest, checked
reading.

Each sample is two tar members: the image, as `<key>.npy` (uint8 [H, W, C], no pickle) or
as the source file's original bytes (`<key>.png`, `<key>.jpg`, ...), and `<key>.cls` (the
integer label as ASCII; -1 for unlabeled images). Members carry mtime 0 and fixed owners,
samples are written in key order, and every shard depends only on its own samples, so the
same inputs give the same sha256 per shard whoever writes it: this process, or the Ray
tasks of the shard stage (pipeline.data.ray_shards) on any number of nodes.

Shards are read from their local directory or from a URL prefix where they were published
(pipeline.data.storage), one shard at a time (pipeline.data.reader): the manifest's sha256
of every shard is checked either way.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pipeline.data.codec import (
    RAW,
    Decoding,
    decode_image,
    decode_raw,
    encode_raw,
    member_extension,
    resize_array,
)
from pipeline.data.sources import ImageSet
from pipeline.data.storage import MANIFEST, child, is_url, read_bytes, upload
from pipeline.errors import UserError
from pipeline.io import sha256_file

if TYPE_CHECKING:  # a shard-writing Ray task never needs torch (seconds to import)
    import torch


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(payload))


@dataclass(frozen=True)
class ShardJob:
    """Everything a shard's writer needs (sent once per node to Ray tasks)."""

    splits: dict[str, ImageSet]
    orders: dict[str, np.ndarray]
    out_dir: Path
    decoding: Decoding | None
    storage: Literal["raw", "encoded"]
    image_size: int | None
    upload_url: str | None  # write each shard there, keeping no local copy


def _read_file(path: str, decoding: Decoding) -> tuple[bytes, np.ndarray]:
    """A source file's bytes (a local path or a URL, read with retries) and its image."""
    payload = read_bytes(path)  # a file gone since it was listed: "<path>: not found"
    try:
        return payload, decode_image(payload, decoding)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three on bad data
        raise UserError(f"{path}: not a readable image ({exc})") from None


ShardTask = tuple[str, int, int, int]  # split, shard index, first and last+1 sample


def write_shard(job: ShardJob, task: ShardTask) -> dict[str, Any]:
    """Write one shard; return its record with pixel sums for the manifest statistics."""
    split, index, start, stop = task
    data = job.splits[split]
    path = job.out_dir / f"{split}-{index:06d}.tar"
    sums = sq_sums = None
    pixels = 0
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in job.orders[split][start:stop]:
            key = f"{int(data.keys[i]):09d}"
            if data.files is None:
                image = np.asarray(data.images[i])
                if job.image_size is not None:
                    image = resize_array(image, job.image_size)
                _add_member(tar, f"{key}.{RAW}", encode_raw(image))
            else:
                payload, image = _read_file(data.files[i], job.decoding)
                if job.storage == "raw":
                    _add_member(tar, f"{key}.{RAW}", encode_raw(image))
                else:
                    _add_member(tar, f"{key}.{member_extension(data.files[i])}", payload)
            _add_member(tar, f"{key}.cls", str(int(data.labels[i])).encode())
            flat = image.reshape(-1, image.shape[-1]).astype(np.float64) / 255.0
            sums = flat.sum(axis=0) if sums is None else sums + flat.sum(axis=0)
            squares = (flat * flat).sum(axis=0)
            sq_sums = squares if sq_sums is None else sq_sums + squares
            pixels += flat.shape[0]
    digest = sha256_file(path)
    if job.upload_url is not None:
        if upload(path, child(job.upload_url, path.name)) != digest:
            raise UserError(f"{path}: changed while it was being uploaded")
        path.unlink()
    return {"file": path.name, "count": stop - start, "sha256": digest,
            "_stats": (sums, sq_sums, pixels, list(image.shape))}


Runner = Callable[[ShardJob, list[ShardTask]], list[dict[str, Any]]]


def in_process(job: ShardJob, tasks: list[ShardTask]) -> list[dict[str, Any]]:
    """`write_shards`'s default runner: every shard in turn, in this process (test data,
    benchmarks; the shard stage runs `ray_shards.on_ray`)."""
    return [write_shard(job, task) for task in tasks]


def write_shards(splits: dict[str, ImageSet], class_names: list[str], out_dir: Path,
                 samples_per_shard: int, source: dict[str, Any], *,
                 decoding: Decoding | None = None,
                 storage: Literal["raw", "encoded"] = "raw",
                 image_size: int | None = None,
                 max_per_class: dict[str, int] | None = None,
                 upload_url: str | None = None, runner: Runner = in_process
                 ) -> dict[str, Any]:
    """Write every split as `<split>-NNNNNN.tar` shards plus the manifest; return it.

    `runner` writes the shards, each a fixed slice of a split in key order (`in_process`,
    or `ray_shards.on_ray`: Ray tasks across a cluster), so the bytes are the same whoever
    writes them. Writers resize array images to `image_size` (file images are decoded to
    `decoding.size`), so only the images that are kept are ever resized. The manifest
    holds counts per split and class, the image shape, per-channel mean/std over all
    splits, the storage kind, every shard's sha256, and the scale controls: `image_size`
    and the `max_per_class` cap the splits were drawn with.

    With `upload_url`, each shard goes there as soon as it is written and its local file is
    deleted (the disk holds at most one shard per writer), then the manifest follows, so
    a reader never finds a manifest whose shards are not all there; `out_dir` keeps only
    the manifest.
    """
    storage = storage if decoding else "raw"
    orders = {split: np.argsort(data.keys, kind="stable") for split, data in splits.items()}
    tasks = [(split, index, start, min(start + samples_per_shard, len(data)))
             for split, data in splits.items()
             for index, start in enumerate(range(0, len(data), samples_per_shard))]
    job = ShardJob(splits, orders, Path(out_dir), decoding, storage, image_size, upload_url)
    records = runner(job, tasks)
    stats = [record.pop("_stats") for record in records]
    if not stats:
        raise UserError(f"{source.get('name')}: the source has no images")
    total_pixels = sum(s[2] for s in stats)
    mean = sum(s[0] for s in stats) / total_pixels
    std = np.sqrt(np.maximum(sum(s[1] for s in stats) / total_pixels - mean ** 2, 0))
    manifest: dict[str, Any] = {
        "source": source,
        "class_names": class_names,
        "image_shape": stats[0][3],
        "image_size": image_size,
        "max_per_class": dict(max_per_class or {}),
        "storage": storage,
        "channel_mean": mean.round(6).tolist(),
        "channel_std": std.round(6).tolist(),
        "total": int(sum(len(s) for s in splits.values())),
        "splits": {},
    }
    by_split = iter(records)
    for split, data in splits.items():
        labels, counts = np.unique(data.labels, return_counts=True)
        num_shards = -(-len(data) // samples_per_shard)
        manifest["splits"][split] = {
            "count": len(data),
            "labeled": bool(len(data) == 0 or labels.min() >= 0),
            "classes": {str(int(c)): int(n) for c, n in zip(labels, counts, strict=True)},
            "shards": [next(by_split) for _ in range(num_shards)],
        }
    (Path(out_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if upload_url is not None:
        upload(Path(out_dir) / MANIFEST, child(upload_url, MANIFEST))
    return manifest


def read_manifest(shard_dir: str | Path, digest: str = "") -> dict[str, Any]:
    """The manifest of a shard directory or URL prefix; with `digest` (manifest_digest of
    the manifest the caller checked), one that changed since is an error."""
    url = child(shard_dir, MANIFEST)
    if not is_url(url) and not Path(url).is_file():
        raise UserError(f"{url}: shard manifest not found; run the shard stage first")
    try:
        manifest = json.loads(read_bytes(url))
    except json.JSONDecodeError as exc:
        raise UserError(f"{url}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if digest and manifest_digest(manifest) != digest:
        raise UserError(f"{url}: changed since this run started (published again?)")
    return manifest


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of a manifest's content, independent of its formatting."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def manifest_decoding(manifest: dict[str, Any]) -> Decoding:
    height, _, channels = manifest["image_shape"]
    return Decoding(int(height), int(channels))


def decode_sample(sample: dict[str, Any], decoding: Decoding) -> tuple[np.ndarray, int]:
    """A webdataset sample (member suffix -> bytes) -> (uint8 [H, W, C], label)."""
    label = int(sample["cls"])
    if RAW in sample:
        return decode_raw(sample[RAW]), label
    image_keys = [k for k in sample if k != "cls" and not k.startswith("__")]
    if len(image_keys) != 1:
        raise ValueError(f"sample {sample.get('__key__')} has members {sorted(sample)}")
    return decode_image(sample[image_keys[0]], decoding), label


@dataclass(frozen=True)
class SplitTensors:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]


def check_split(shard_dir: str | Path, manifest: dict[str, Any], split: str) -> None:
    if split not in manifest["splits"]:
        raise UserError(f"{child(shard_dir, MANIFEST)}: no split '{split}'")

"""Reading a split's shards one at a time, in fixed per-shard batches: bounded memory.

Every reader of decoded images goes through here: the streaming loader, feature
extraction, the online monitor, geometry and fine-tuning. A reader holds what the shard
reader buffers for one shard (`pipeline.data.tario.shard_samples`, which checks the sha256
before any sample is used) plus one batch of decoded images, whatever the split's size.

Batches never span shards: shard s is cut into batches of `batch_size` (its last one
ragged), so whoever reads a shard, in whichever process or Ray worker, computes on the
same batches, and results computed per shard concatenate to the single-process result.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.codec import Decoding
from pipeline.data.shards import (
    SplitTensors,
    check_split,
    decode_sample,
    manifest_decoding,
    read_manifest,
)
from pipeline.data.storage import child, is_url
from pipeline.data.tario import shard_samples
from pipeline.errors import UserError


@dataclass(frozen=True)
class Shard:
    url: str
    count: int
    sha256: str = ""  # checked on every read when set


DIGEST_DIFFERS = "sha256 differs from the manifest"  # tario.shard_samples's reason


class CorruptShard(ValueError):
    """A shard that decodes badly or holds another number of samples than the manifest."""


def split_shards(shard_dir: str | Path, splits: list[str]) -> tuple[list[Shard], int, Decoding]:
    """Shards (absolute paths or URLs) and image count of the splits, in manifest order,
    and how to decode them."""
    location = str(shard_dir) if is_url(shard_dir) else str(Path(shard_dir).resolve())
    manifest = read_manifest(location)
    shards = []
    for split in splits:
        check_split(location, manifest, split)
        shards += [Shard(child(location, r["file"]), int(r["count"]), r["sha256"])
                   for r in manifest["splits"][split]["shards"]]
    return shards, sum(s.count for s in shards), manifest_decoding(manifest)


def read_shard(shard: Shard, decoding: Decoding) -> Iterator[tuple[np.ndarray, int]]:
    """Decoded samples (uint8 [H, W, C], label) of one shard, in key order.

    Raises UserError when the shard cannot be reached and CorruptShard when its digest,
    content or sample count is wrong. A half-yielded shard is possible (corruption found
    late, without a digest to check first); its samples stay valid.
    """
    found = 0
    try:
        for sample in shard_samples(shard.url, shard.sha256):
            yield decode_sample(sample, decoding)
            found += 1
    except UserError:
        raise
    except Exception as exc:  # any failure inside a shard's bytes means it is corrupt
        text = str(exc)
        raise CorruptShard(text if text.startswith(DIGEST_DIFFERS) else
                           f"unreadable shard ({text})") from None
    if found != shard.count:
        raise CorruptShard(f"{found} samples, the manifest says {shard.count} (truncated?)")


def stack_images(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W, C] arrays -> one uint8 [N, C, H, W] tensor."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def shard_batches(shard: Shard, decoding: Decoding, batch_size: int
                  ) -> Iterator[SplitTensors]:
    """One shard's images and labels in key order, `batch_size` at a time (the last batch
    ragged); a corrupt or unreachable shard is a one-line UserError naming it."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    try:
        for image, label in read_shard(shard, decoding):
            images.append(image)
            labels.append(label)
            if len(images) == batch_size:
                yield SplitTensors(stack_images(images), torch.tensor(labels))
                images, labels = [], []
    except CorruptShard as exc:
        raise UserError(f"{shard.url}: {_corrupt_message(exc)}") from None
    if images:
        yield SplitTensors(stack_images(images), torch.tensor(labels))


def _corrupt_message(exc: CorruptShard) -> str:
    text = str(exc)
    return f"{text} (corrupt or modified)" if text.startswith(DIGEST_DIFFERS) else text


def shards_batches(shards: Iterable[Shard], decoding: Decoding, batch_size: int,
                   limit: int | None = None) -> Iterator[SplitTensors]:
    """`shard_batches` of each shard in turn; with `limit`, only the first `limit` images
    (the last batch cut short, and no shard read past it)."""
    remaining = limit
    for shard in shards:
        if remaining is not None and remaining <= 0:
            return
        for batch in shard_batches(shard, decoding, batch_size):
            if remaining is not None:
                if remaining <= 0:
                    return
                batch = SplitTensors(batch.images[:remaining], batch.labels[:remaining])
                remaining -= len(batch.labels)
            yield batch


def split_batches(shard_dir: str | Path, split: str, batch_size: int,
                  limit: int | None = None) -> Iterator[SplitTensors]:
    """A split's images in key order, in per-shard batches (see the module docstring)."""
    shards, _, decoding = split_shards(shard_dir, [split])
    return shards_batches(shards, decoding, batch_size, limit)


def image_bytes(manifest: dict[str, Any]) -> int:
    """Bytes of one decoded uint8 image of a shard directory."""
    height, width, channels = manifest["image_shape"]
    return int(height) * int(width) * int(channels)


def split_bytes(shard_dir: str | Path, splits: list[str]) -> int:
    """Bytes the splits take decoded as uint8 (what holding them in memory costs)."""
    manifest = read_manifest(shard_dir)
    for split in splits:
        check_split(shard_dir, manifest, split)
    images = sum(int(manifest["splits"][split]["count"]) for split in splits)
    return images * image_bytes(manifest)


def read_split(shard_dir: str | Path, split: str, verify: bool = True) -> SplitTensors:
    """A whole split in memory, in key order: only where it fits a stated budget (the
    memory loader, fine-tuning) or is small by construction (tests).

    With `verify`, each shard's sha256 is checked against the manifest first, so a
    truncated, altered or re-published shard is named instead of silently used.
    """
    return read_splits(shard_dir, [split], verify)


def read_splits(shard_dir: str | Path, splits: list[str], verify: bool = True) -> SplitTensors:
    """`read_split` of several splits (e.g. STL-10's train and unlabeled), concatenated.

    The tensors are allocated once from the manifest's counts and filled shard by shard,
    so the peak is the splits plus one decoded shard, not the splits twice over.
    """
    shards, total, decoding = split_shards(shard_dir, splits)
    if not verify:
        shards = [Shard(shard.url, shard.count) for shard in shards]
    for shard in shards:
        if not is_url(shard.url) and not Path(shard.url).is_file():
            raise UserError(f"{shard.url}: shard listed in the manifest is missing")
    size, channels = decoding.size, decoding.channels
    images = torch.empty(0, channels, size, size, dtype=torch.uint8)
    labels = torch.empty(total, dtype=torch.int64)
    filled = 0
    for shard in shards:  # read_shard has checked each shard's count when it ends
        for batch in shard_batches(shard, decoding, batch_size=max(1, shard.count)):
            if filled == 0:  # in the batches' layout (see _images_like)
                images = _images_like(batch.images, total)
            images[filled:filled + len(batch.labels)] = batch.images
            labels[filled:filled + len(batch.labels)] = batch.labels
            filled += len(batch.labels)
    return SplitTensors(images, labels)


def _images_like(batch: torch.Tensor, count: int) -> torch.Tensor:
    """Uninitialised images with the strides of a decoded batch. With one channel,
    `stack_images` leaves NHWC strides (as contiguous as NCHW's, to torch), and a
    convolution takes another kernel for them: a split read whole must give the features,
    bit for bit, that its batches streamed give."""
    return torch.empty_strided((count, *batch.shape[1:]), batch.stride(), dtype=batch.dtype)

"""MNIST and Fashion-MNIST: the IDX format (big-endian header, then raw uint8), gzipped
or not, under the official file names."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from pipeline.data.sources.base import ImageSet, SourceData, check_labels, require_dir, require_file
from pipeline.errors import UserError
from pipeline.params.data import FashionMNISTSource, MNISTSource

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
_UNSIGNED_BYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes as an array shaped by its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != _UNSIGNED_BYTE:
        raise UserError(f"{path}: not an IDX file of unsigned bytes "
                        f"(magic {data[:4].hex() or 'missing'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)
    if len(data) - header != expected:
        raise UserError(f"{path}: {len(data) - header} data bytes, the header {dims} "
                        f"needs {expected} (truncated or corrupt)")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _idx_file(directory: Path, prefix: str, kind: str, rank: int) -> Path:
    stems = [f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"]
    return require_file(directory, [s + ext for s in stems for ext in (".gz", "")],
                        f"{kind} IDX file")


def load_idx_pair(directory: Path, prefix: str, key_offset: int) -> ImageSet:
    image_path = _idx_file(directory, prefix, "images", 3)
    label_path = _idx_file(directory, prefix, "labels", 1)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3:
        raise UserError(f"{image_path}: expected [N, H, W] images, header says {images.shape}")
    if labels.ndim != 1:
        raise UserError(f"{label_path}: expected [N] labels, header says {labels.shape}")
    labels = labels.astype(np.int64)
    check_labels(label_path, labels, len(images), 10)
    keys = np.arange(len(labels), dtype=np.int64) + key_offset
    return ImageSet(images[..., None], labels, keys)


def load_idx_dataset(path: str, class_names: list[str]) -> SourceData:
    directory = require_dir(path, "IDX dataset")
    train = load_idx_pair(directory, "train", 0)
    test = load_idx_pair(directory, "t10k", len(train))
    return SourceData({"train": train, "test": test}, class_names)


def load_fashion_mnist(cfg: FashionMNISTSource) -> SourceData:
    return load_idx_dataset(cfg.path, FASHION_CLASSES)


def load_mnist(cfg: MNISTSource) -> SourceData:
    return load_idx_dataset(cfg.path, [str(digit) for digit in range(10)])

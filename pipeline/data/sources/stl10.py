"""STL-10 binary format: 96x96 RGB, column-major per channel, labels 1..10 on disk.

The 100,000 unlabeled images become split `unlabeled` with label -1 (pretraining only).
Images are memory-mapped, so the 2.7 GB unlabeled file is never loaded at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.sources.base import (
    UNLABELED,
    ImageSet,
    SourceData,
    check_labels,
    require_dir,
    require_file,
)
from pipeline.errors import UserError
from pipeline.params.data import STL10Source

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE


def read_images(path: Path) -> np.ndarray:
    """uint8 [N, 96, 96, 3] view of an `*_X.bin` file (memory-mapped)."""
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise UserError(f"{path}: {size} bytes is not a whole number of 96x96x3 images "
                        "(truncated or not STL-10)")
    raw = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, SIDE, SIDE)
    return raw.transpose(0, 3, 2, 1)


def _labeled(directory: Path, split: str, key_offset: int, num_classes: int) -> ImageSet:
    images = read_images(require_file(directory, [f"{split}_X.bin"], f"STL-10 {split} images"))
    label_path = require_file(directory, [f"{split}_y.bin"], f"STL-10 {split} labels")
    labels = np.fromfile(label_path, dtype=np.uint8).astype(np.int64) - 1
    check_labels(label_path, labels, len(images), num_classes)
    keys = np.arange(len(labels), dtype=np.int64) + key_offset
    return ImageSet(images, labels, keys)


def load_stl10(cfg: STL10Source) -> SourceData:
    directory = require_dir(cfg.path, "STL-10 binary (stl10_binary)")
    names_path = require_file(directory, ["class_names.txt"], "STL-10 class names")
    class_names = [line.strip() for line in names_path.read_text().splitlines()
                   if line.strip()]
    if not class_names:
        raise UserError(f"{names_path}: no class names")
    train = _labeled(directory, "train", 0, len(class_names))
    test = _labeled(directory, "test", len(train), len(class_names))
    splits = {"train": train, "test": test}
    if cfg.unlabeled:
        images = read_images(require_file(directory, ["unlabeled_X.bin"],
                                          "STL-10 unlabeled images"))
        offset = len(train) + len(test)
        splits["unlabeled"] = ImageSet(images, np.full(len(images), UNLABELED, np.int64),
                                       np.arange(len(images), dtype=np.int64) + offset)
    return SourceData(splits, class_names)

"""What every source returns, and the checks that turn bad files into one clear line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.data.codec import Decoding
from pipeline.errors import UserError

UNLABELED = -1  # the label of STL-10's unlabeled split: pretraining only, never probed


@dataclass(frozen=True)
class ImageSet:
    """Images with integer labels and stable keys (unique within the source) for sorting.

    Either `images` holds uint8 [N, H, W, C] (possibly a read-only memmap), or `files`
    holds paths of encoded images that the shard writer reads (and decodes if needed).
    """

    images: np.ndarray | None
    labels: np.ndarray  # int64 [N]; UNLABELED where there is no label
    keys: np.ndarray  # int64 [N]
    files: np.ndarray | None = None  # object [N] of str paths

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask_or_index: np.ndarray) -> ImageSet:
        return ImageSet(
            None if self.images is None else self.images[mask_or_index],
            self.labels[mask_or_index], self.keys[mask_or_index],
            None if self.files is None else self.files[mask_or_index])


@dataclass(frozen=True)
class SourceData:
    """A source's splits: `all`, or official ones (`train`, `test`, STL-10's `unlabeled`).

    `decoding` is set for file sources: encoded images are decoded to that size, and
    `storage` says whether shards keep the original bytes (`encoded`) or decoded `raw`.
    """

    splits: dict[str, ImageSet]
    class_names: list[str]
    decoding: Decoding | None = None
    storage: Literal["raw", "encoded"] = "raw"


def require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: {what} directory not found")
    return path


def require_file(directory: Path, names: list[str], what: str) -> Path:
    """The first of `names` that exists in `directory`, or a UserError naming them."""
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise UserError(f"{directory / names[0]}: {what} not found")


def check_labels(path: Path, labels: np.ndarray, count: int, num_classes: int) -> None:
    if len(labels) != count:
        raise UserError(f"{path}: {len(labels)} labels for {count} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path}: labels outside 0..{num_classes - 1}")

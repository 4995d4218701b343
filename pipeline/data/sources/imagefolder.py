"""root/<split>/<class>/<image> trees in any format PIL reads; class names sorted.

Files are listed here and read by the (parallel) shard writer, which keeps their bytes or
decodes them, so a million-image folder is never held in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.codec import Decoding
from pipeline.data.sources.base import ImageSet, SourceData, require_dir
from pipeline.errors import UserError
from pipeline.params.data import ImageFolderSource

OFFICIAL_SPLITS = ("train", "test")
RAW_UP_TO = 64  # `storage: auto` stores decoded uint8 up to this side, encoded bytes above


def image_extensions() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def _class_dirs(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir()
                  if entry.is_dir() and not entry.name.startswith("."))


def _list_split(directory: Path, class_names: list[str], extensions: set[str],
                key_offset: int) -> ImageSet:
    unknown = sorted(set(_class_dirs(directory)) - set(class_names))
    if unknown:
        raise UserError(f"{directory / unknown[0]}: class folder not present in train")
    files, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = directory / name
        if not class_dir.is_dir():
            continue
        names = sorted(entry.name for entry in class_dir.iterdir()
                       if entry.is_file() and entry.suffix.lower() in extensions)
        files += [str(class_dir / file) for file in names]
        labels += [label] * len(names)
    if not files:
        raise UserError(f"{directory}: no images found in its class folders")
    keys = np.arange(len(files), dtype=np.int64) + key_offset
    return ImageSet(None, np.asarray(labels, dtype=np.int64), keys,
                    np.asarray(files, dtype=object))


def load_imagefolder(cfg: ImageFolderSource, image_size: int) -> SourceData:
    """List the files; the shard writer decodes them to `image_size` (the dataset's)."""
    root = require_dir(cfg.path, "image folder")
    split_dirs = {name: root / name for name in OFFICIAL_SPLITS if (root / name).is_dir()}
    if split_dirs and "train" not in split_dirs:
        raise UserError(f"{root / 'train'}: image folder has a test split but no train split")
    if not split_dirs:
        split_dirs = {"all": root}
    first = split_dirs.get("train", root)
    class_names = _class_dirs(first)
    if not class_names:
        raise UserError(f"{first}: no class folders (expected <split>/<class>/<image>)")
    extensions = image_extensions()
    splits: dict[str, ImageSet] = {}
    offset = 0
    for name, directory in split_dirs.items():
        splits[name] = _list_split(directory, class_names, extensions, offset)
        offset += len(splits[name])
    storage = cfg.storage
    if storage == "auto":
        storage = "raw" if image_size <= RAW_UP_TO else "encoded"
    return SourceData(splits, class_names, Decoding(image_size, cfg.channels), storage)

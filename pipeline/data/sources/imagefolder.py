"""root/<split>/<class>/<image> trees in any format PIL reads, in a local directory or at
an object-store prefix (`s3://bucket/images`, any URL pyarrow lists); class names sorted.

The tree is listed here, in one recursive listing; its files are read by the shard writers
(Ray tasks on any node: local paths are made absolute), which keep their bytes or decode
them, so a million-image folder is never held in memory.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import numpy as np

from pipeline.data.codec import Decoding
from pipeline.data.sources.base import ImageSet, SourceData
from pipeline.data.storage import Tree, child, is_url, list_tree
from pipeline.errors import UserError
from pipeline.params.data import ImageFolderSource

OFFICIAL_SPLITS = ("train", "test")
RAW_UP_TO = 64  # `storage: auto` stores decoded uint8 up to this side, encoded bytes above


def image_extensions() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def _class_dirs(tree: Tree, folder: str) -> list[str]:
    return [name for name in tree.get(folder, ([], []))[0] if not name.startswith(".")]


def _list_split(root: str, tree: Tree, folder: str, class_names: list[str],
                extensions: set[str], key_offset: int) -> ImageSet:
    unknown = sorted(set(_class_dirs(tree, folder)) - set(class_names))
    if unknown:
        raise UserError(f"{child(root, posixpath.join(folder, unknown[0]))}: class folder "
                        "not present in train")
    files, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = posixpath.join(folder, name)
        names = [file for file in tree.get(class_dir, ([], []))[1]
                 if Path(file).suffix.lower() in extensions]
        files += [child(root, posixpath.join(class_dir, file)) for file in names]
        labels += [label] * len(names)
    if not files:
        raise UserError(f"{child(root, folder) if folder else root}: no images found in its "
                        "class folders")
    keys = np.arange(len(files), dtype=np.int64) + key_offset
    return ImageSet(None, np.asarray(labels, dtype=np.int64), keys,
                    np.asarray(files, dtype=object))


def load_imagefolder(cfg: ImageFolderSource, image_size: int) -> SourceData:
    """List the files; the shard writer decodes them to `image_size` (the dataset's)."""
    root = cfg.path if is_url(cfg.path) else str(Path(cfg.path).resolve())
    tree = list_tree(root)
    if tree is None:
        raise UserError(f"{cfg.path}: image folder directory not found")
    present = _class_dirs(tree, "")
    split_dirs = {name: name for name in OFFICIAL_SPLITS if name in present}
    if split_dirs and "train" not in split_dirs:
        raise UserError(f"{child(root, 'train')}: image folder has a test split but no train "
                        "split")
    if not split_dirs:
        split_dirs = {"all": ""}
    first = split_dirs.get("train", "")
    class_names = _class_dirs(tree, first)
    if not class_names:
        raise UserError(f"{child(root, first) if first else root}: no class folders "
                        "(expected <split>/<class>/<image>)")
    extensions = image_extensions()
    splits: dict[str, ImageSet] = {}
    offset = 0
    for name, folder in split_dirs.items():
        splits[name] = _list_split(root, tree, folder, class_names, extensions, offset)
        offset += len(splits[name])
    storage = cfg.storage
    if storage == "auto":
        storage = "raw" if image_size <= RAW_UP_TO else "encoded"
    return SourceData(splits, class_names, Decoding(image_size, cfg.channels), storage)

"""Image sources: each reads local files into splits of uint8 images (or image files),
integer labels and class names.

Sources without an official train/test split return one `all` split (or only `train`);
`make_splits` divides it (stratified, seeded) and moves held-out classes into the transfer splits.
STL-10's `unlabeled` split (label -1) passes through untouched, for pretraining only.
`cap_per_class` then keeps a seeded, stratified subset of each split (`max_per_class`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping

import numpy as np

from pipeline.data.sources.base import UNLABELED, ImageSet, SourceData
from pipeline.data.sources.cifar import load_cifar
from pipeline.data.sources.digits import load_digits
from pipeline.data.sources.idx import load_fashion_mnist, load_mnist
from pipeline.data.sources.imagefolder import load_imagefolder
from pipeline.data.sources.stl10 import load_stl10
from pipeline.errors import UserError
from pipeline.params.data import ImageFolderSource, Source, SplitConfig

__all__ = ["SPLITS", "UNLABELED", "ImageSet", "SourceData", "cap_per_class", "load_source",
           "make_splits"]

SPLITS = ("train", "test", "transfer_train", "transfer_test")

ARRAY_LOADERS: dict[str, Callable[..., SourceData]] = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar,
    "cifar100": load_cifar,
    "stl10": load_stl10,
}


def load_source(cfg: Source, image_size: int | None = None) -> SourceData:
    """Array sources load at their native size (the shard writer resizes them, after the
    cap); an image folder's files are listed here and decoded to `image_size` when written."""
    if isinstance(cfg, ImageFolderSource):
        if image_size is None:
            raise UserError(f"{cfg.path}: an image folder needs image_size")
        return load_imagefolder(cfg, image_size)
    return ARRAY_LOADERS[cfg.name](cfg)


def _stratified_split(data: ImageSet, test_fraction: float, seed: int) -> tuple[ImageSet, ...]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(data))
    train, test = train_test_split(index, test_size=test_fraction, random_state=seed,
                                   stratify=data.labels)
    return data.subset(np.sort(train)), data.subset(np.sort(test))


def make_splits(source: SourceData, cfg: SplitConfig) -> dict[str, ImageSet]:
    """train/test over the seen classes, transfer_train/transfer_test over held-out ones,
    plus `unlabeled` where the source has it."""
    if "test" in source.splits and not cfg.validation:
        train, test = source.splits["train"], source.splits["test"]
    else:  # `all`, an image folder with a train split only, or a validation split
        whole = source.splits.get("all", source.splits.get("train"))
        train, test = _stratified_split(whole, cfg.test_fraction, cfg.seed)
    heldout = np.asarray(cfg.heldout_classes, dtype=np.int64)
    splits = {}
    for name, data in (("train", train), ("test", test)):
        is_heldout = np.isin(data.labels, heldout)
        splits[name] = data.subset(~is_heldout) if is_heldout.any() else data
        splits[f"transfer_{name}"] = data.subset(is_heldout)
    if "unlabeled" in source.splits:
        splits["unlabeled"] = source.splits["unlabeled"]
    return splits


def _capped_index(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of at most `cap` randomly chosen images of each class."""
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep.append(rng.choice(members, cap, replace=False) if len(members) > cap else members)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def cap_per_class(splits: dict[str, ImageSet], max_per_class: Mapping[str, int], seed: int
                  ) -> dict[str, ImageSet]:
    """Each split named in `max_per_class` keeps a random subset of at most N images per
    class (unlabeled images are one class), in the split's own order.

    Each split draws from its own generator, seeded by `seed` and the split's name, so
    capping one split never changes another's subset. Uncapped splits pass through
    untouched (no copy of a memory-mapped split).
    """
    capped = dict(splits)
    for name, cap in max_per_class.items():
        if name not in splits:
            continue
        data = splits[name]
        index = _capped_index(data.labels, cap,
                              np.random.default_rng([seed, zlib.crc32(name.encode())]))
        if len(index) < len(data):
            capped[name] = data.subset(index)
    return capped

"""Image sources: each reads local files into splits of uint8 images (or image files),
integer labels and class names.

Sources without an official train/test split return one `all` split (or only `train`);
`make_splits` divides it (stratified, seeded) and moves held-out classes into the transfer splits.
STL-10's `unlabeled` split (label -1) passes through untouched, for pretraining only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.data.sources.base import UNLABELED, ImageSet, SourceData
from pipeline.data.sources.cifar import load_cifar
from pipeline.data.sources.digits import load_digits
from pipeline.data.sources.idx import load_fashion_mnist, load_mnist
from pipeline.data.sources.imagefolder import load_imagefolder
from pipeline.data.sources.stl10 import load_stl10
from pipeline.params import Source, SplitConfig

__all__ = ["SPLITS", "UNLABELED", "ImageSet", "SourceData", "load_source", "make_splits"]

SPLITS = ("train", "test", "transfer_train", "transfer_test")

LOADERS: dict[str, Callable[..., SourceData]] = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar,
    "cifar100": load_cifar,
    "stl10": load_stl10,
    "imagefolder": load_imagefolder,
}


def load_source(cfg: Source) -> SourceData:
    return LOADERS[cfg.name](cfg)


def _stratified_split(data: ImageSet, test_fraction: float, seed: int) -> tuple[ImageSet, ...]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(data))
    train, test = train_test_split(index, test_size=test_fraction, random_state=seed,
                                   stratify=data.labels)
    return data.subset(np.sort(train)), data.subset(np.sort(test))


def make_splits(source: SourceData, cfg: SplitConfig) -> dict[str, ImageSet]:
    """train/test over the seen classes, transfer_train/transfer_test over held-out ones,
    plus `unlabeled` where the source has it."""
    if "test" in source.splits:
        train, test = source.splits["train"], source.splits["test"]
    else:  # `all`, or an image folder with a train split only
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

"""Image sources: each returns uint8 images [N, H, W, C], integer labels and class names.

Sources without an official train/test split return one `all` split; `make_splits`
divides it (stratified, seeded) and moves held-out classes into the transfer splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.params import DigitsSource, Source, SplitConfig


@dataclass(frozen=True)
class ImageSet:
    """Images as stored in shards, with stable keys (source indices) for sorting."""

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    keys: np.ndarray  # int64 [N], unique within the source

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask_or_index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[mask_or_index], self.labels[mask_or_index],
                        self.keys[mask_or_index])


@dataclass(frozen=True)
class SourceData:
    splits: dict[str, ImageSet]  # `all`, or official splits such as `train` and `test`
    class_names: list[str]


SPLITS = ("train", "test", "transfer_train", "transfer_test")


def load_digits(cfg: DigitsSource) -> SourceData:
    """scikit-learn's bundled digits: 8x8 images with 17 grey levels, scaled to 0..255."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    keys = np.arange(len(labels), dtype=np.int64)
    return SourceData({"all": ImageSet(images[..., None], labels, keys)},
                      [str(name) for name in bunch.target_names])


LOADERS = {"digits": load_digits}


def load_source(cfg: Source) -> SourceData:
    return LOADERS[cfg.name](cfg)


def _stratified_split(data: ImageSet, test_fraction: float, seed: int) -> tuple[ImageSet, ...]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(data))
    train, test = train_test_split(index, test_size=test_fraction, random_state=seed,
                                   stratify=data.labels)
    return data.subset(np.sort(train)), data.subset(np.sort(test))


def make_splits(source: SourceData, cfg: SplitConfig) -> dict[str, ImageSet]:
    """train/test over the seen classes, transfer_train/transfer_test over held-out ones."""
    if "all" in source.splits:
        train, test = _stratified_split(source.splits["all"], cfg.test_fraction, cfg.seed)
    else:
        train, test = source.splits["train"], source.splits["test"]
    heldout = np.asarray(cfg.heldout_classes, dtype=np.int64)
    splits = {}
    for name, data in (("train", train), ("test", test)):
        is_heldout = np.isin(data.labels, heldout)
        splits[name] = data.subset(~is_heldout)
        splits[f"transfer_{name}"] = data.subset(is_heldout)
    return splits

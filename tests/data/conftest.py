"""Tiny datasets written in each source's real on-disk format, with known pixels."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.shards import write_shards
from pipeline.data.sources import ImageSet


def random_images(n: int, height: int, width: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, height, width, channels), dtype=np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


@pytest.fixture
def idx_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """MNIST-style IDX files: gzipped train, plain t10k (both spellings are official)."""
    arrays = {"train_images": random_images(30, 28, 28, 1, 0)[..., 0],
              "train_labels": np.arange(30, dtype=np.uint8) % 10,
              "test_images": random_images(10, 28, 28, 1, 1)[..., 0],
              "test_labels": np.arange(10, dtype=np.uint8)}
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", arrays["train_images"])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", arrays["train_labels"])
    write_idx(tmp_path / "t10k-images-idx3-ubyte", arrays["test_images"])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", arrays["test_labels"])
    return tmp_path, arrays


def _pickle(path: Path, obj: object) -> None:
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)  # the protocol of the official files


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """cifar-10-batches-py with 4 images per batch; returns (dir, train HWC, labels)."""
    images = random_images(24, 32, 32, 3, 2)
    labels = np.arange(24) % 10
    for i in range(6):
        chunk = slice(4 * i, 4 * (i + 1))
        name = f"data_batch_{i + 1}" if i < 5 else "test_batch"
        _pickle(tmp_path / name, {
            "batch_label": name,
            "data": images[chunk].transpose(0, 3, 1, 2).reshape(4, -1),
            "labels": [int(label) for label in labels[chunk]],
            "filenames": [f"img{k}.png" for k in range(4)]})
    _pickle(tmp_path / "batches.meta", {"label_names": [f"class{k}" for k in range(10)],
                                        "num_vis": 3072})
    return tmp_path, images, labels


def write_cifar100(path: Path, fine_labels: dict[str, list[int]]) -> None:
    """cifar-100-python with the given fine labels per split (coarse: fine % 20)."""
    for name, labels in fine_labels.items():
        n = len(labels)
        _pickle(path / name, {
            "data": random_images(n, 32, 32, 3, 3).transpose(0, 3, 1, 2).reshape(n, -1),
            "fine_labels": labels, "coarse_labels": [label % 20 for label in labels]})
    _pickle(path / "meta", {"fine_label_names": [f"f{k}" for k in range(100)],
                            "coarse_label_names": [f"c{k}" for k in range(20)]})


@pytest.fixture
def cifar100_dir(tmp_path: Path) -> Path:
    write_cifar100(tmp_path, {"train": [99 - k for k in range(6)], "test": [99, 98]})
    return tmp_path


@pytest.fixture
def cifar100_three_classes_dir(tmp_path: Path) -> Path:
    """4 train and 2 test images in each of 3 classes: room for a per-class cap to choose."""
    write_cifar100(tmp_path, {"train": [k % 3 for k in range(12)],
                              "test": [k % 3 for k in range(6)]})
    return tmp_path


def write_stl_images(path: Path, images: np.ndarray) -> None:
    """STL-10 stores each channel column-major: the inverse of transpose(0, 3, 2, 1)."""
    path.write_bytes(np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes())


def write_stl10(path: Path, train_y: list[int], test_y: list[int], unlabeled: int
                ) -> dict[str, np.ndarray]:
    """stl10_binary with labels 1..10 as on disk; returns the images per split."""
    arrays = {"train": random_images(len(train_y), 96, 96, 3, 4),
              "test": random_images(len(test_y), 96, 96, 3, 5),
              "unlabeled": random_images(unlabeled, 96, 96, 3, 6)}
    for split in ("train", "test", "unlabeled"):
        write_stl_images(path / f"{split}_X.bin", arrays[split])
    (path / "train_y.bin").write_bytes(bytes(train_y))
    (path / "test_y.bin").write_bytes(bytes(test_y))
    (path / "class_names.txt").write_text("\n".join(f"c{k}" for k in range(10)) + "\n")
    return arrays


@pytest.fixture
def stl10_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, write_stl10(tmp_path, [1, 2, 10, 1], [10, 3], unlabeled=3)


@pytest.fixture
def stl10_three_classes_dir(tmp_path: Path) -> Path:
    """3 train images in each of 3 classes, 4 test images, 8 unlabeled: room for a cap."""
    write_stl10(tmp_path, [1 + k % 3 for k in range(9)], [1, 2, 3, 1], unlabeled=8)
    return tmp_path


@pytest.fixture
def imagefolder_dir(tmp_path: Path) -> Path:
    """train/{cat,ant}/ and test/{ant,cat}/ with PNGs (exact pixels) and JPEGs of odd sizes."""
    rng = np.random.default_rng(7)
    for split, per_class in (("train", 3), ("test", 1)):
        for name in ("cat", "ant"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                png = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(png).save(folder / f"{k}.png")
                jpg = rng.integers(0, 256, (20 + k, 24, 3), dtype=np.uint8)
                Image.fromarray(jpg).save(folder / f"{k}.JPEG", quality=90)
            (folder / "notes.txt").write_text("not an image")
    return tmp_path


@pytest.fixture
def numbered_shards(tmp_path: Path) -> Path:
    """60 4x4 images in 6 shards whose label is their own index, so batches can be audited."""
    n = 60
    images = np.repeat(np.arange(n, dtype=np.uint8), 16).reshape(n, 4, 4, 1)
    labels = np.arange(n, dtype=np.int64)
    data = ImageSet(images, labels, labels.copy())

    write_shards({"train": data}, [str(i) for i in range(n)], tmp_path, 10, {"name": "test"})
    return tmp_path

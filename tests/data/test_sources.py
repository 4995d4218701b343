"""Every source on small files in its real format, plus the real Fashion-MNIST if present."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.sources import UNLABELED, ImageSet, cap_per_class, load_source, make_splits
from pipeline.errors import UserError
from pipeline.params.data import (
    CIFARSource,
    FashionMNISTSource,
    ImageFolderSource,
    MNISTSource,
    SplitConfig,
    STL10Source,
)

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_mnist_idx_gzipped_and_plain(idx_dir):
    path, arrays = idx_dir
    data = load_source(MNISTSource(name="mnist", path=str(path)))
    assert data.class_names == [str(d) for d in range(10)]
    np.testing.assert_array_equal(data.splits["train"].images[..., 0], arrays["train_images"])
    np.testing.assert_array_equal(data.splits["test"].labels, arrays["test_labels"])
    keys = np.concatenate([data.splits["train"].keys, data.splits["test"].keys])
    assert len(np.unique(keys)) == 40


def test_idx_truncated_file_is_named(idx_dir):
    path, _ = idx_dir
    target = path / "t10k-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:-5])
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte: .*truncated"):
        load_source(MNISTSource(name="mnist", path=str(path)))


def test_idx_wrong_magic_and_missing_files(idx_dir, tmp_path):
    path, _ = idx_dir
    (path / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte: not an IDX file"):
        load_source(MNISTSource(name="mnist", path=str(path)))
    with pytest.raises(UserError, match="nowhere: IDX dataset directory not found"):
        load_source(MNISTSource(name="mnist", path=str(tmp_path / "nowhere")))
    (path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte\.gz: labels IDX file not found"):
        load_source(MNISTSource(name="mnist", path=str(path)))


def test_cifar10_pixels_labels_and_names(cifar10_dir):
    path, images, labels = cifar10_dir
    data = load_source(CIFARSource(name="cifar10", path=str(path)))
    assert data.class_names == [f"class{k}" for k in range(10)]
    np.testing.assert_array_equal(data.splits["train"].images, images[:20])
    np.testing.assert_array_equal(data.splits["test"].images, images[20:])
    np.testing.assert_array_equal(data.splits["train"].labels, labels[:20])


def test_cifar100_fine_and_coarse(cifar100_dir):
    fine = load_source(CIFARSource(name="cifar100", path=str(cifar100_dir)))
    coarse = load_source(CIFARSource(name="cifar100", path=str(cifar100_dir), labels="coarse"))
    assert len(fine.class_names) == 100 and len(coarse.class_names) == 20
    assert fine.splits["train"].labels.tolist() == [99, 98, 97, 96, 95, 94]
    assert coarse.splits["test"].labels.tolist() == [19, 18]


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/cifar-pickle-exploit-ran"),))


def test_cifar_unpickler_refuses_foreign_globals(cifar10_dir):
    path, _, _ = cifar10_dir
    marker = Path("/tmp/cifar-pickle-exploit-ran")
    marker.unlink(missing_ok=True)
    buffer = io.BytesIO()
    pickle.dump({"data": _Exploit(), "labels": []}, buffer, protocol=2)
    (path / "test_batch").write_bytes(buffer.getvalue())
    with pytest.raises(UserError, match=r"test_batch: not a CIFAR python pickle.*refusing"):
        load_source(CIFARSource(name="cifar10", path=str(path)))
    assert not marker.exists()


def test_cifar_truncated_batch_is_named(cifar10_dir):
    path, _, _ = cifar10_dir
    target = path / "data_batch_3"
    target.write_bytes(target.read_bytes()[:200])
    with pytest.raises(UserError, match="data_batch_3: not a CIFAR python pickle"):
        load_source(CIFARSource(name="cifar10", path=str(path)))


def test_stl10_orientation_labels_and_unlabeled(stl10_dir):
    path, arrays = stl10_dir
    data = load_source(STL10Source(name="stl10", path=str(path)))
    np.testing.assert_array_equal(data.splits["train"].images, arrays["train"])
    np.testing.assert_array_equal(data.splits["unlabeled"].images, arrays["unlabeled"])
    assert data.splits["train"].labels.tolist() == [0, 1, 9, 0]
    assert (data.splits["unlabeled"].labels == UNLABELED).all()
    splits = make_splits(data, SplitConfig(heldout_classes=[9]))
    assert len(splits["unlabeled"]) == 3
    assert splits["transfer_train"].labels.tolist() == [9]
    without = load_source(STL10Source(name="stl10", path=str(path), unlabeled=False))
    assert "unlabeled" not in without.splits


def test_stl10_truncated_images_are_named(stl10_dir):
    path, _ = stl10_dir
    target = path / "test_X.bin"
    target.write_bytes(target.read_bytes()[:-1])
    with pytest.raises(UserError, match=r"test_X\.bin: .* not a whole number"):
        load_source(STL10Source(name="stl10", path=str(path)))


def test_imagefolder_lists_sorted_classes_and_image_files(imagefolder_dir):
    cfg = ImageFolderSource(name="imagefolder", path=str(imagefolder_dir))
    data = load_source(cfg, image_size=16)
    assert data.class_names == ["ant", "cat"]
    train = data.splits["train"]
    assert len(train) == 12 and train.labels.tolist() == [0] * 6 + [1] * 6
    assert all(not f.endswith(".txt") for f in train.files)
    assert data.storage == "raw" and data.decoding.size == 16
    big = load_source(cfg, image_size=96)
    assert big.storage == "encoded"


def test_imagefolder_without_splits_is_one_split(imagefolder_dir):
    data = load_source(ImageFolderSource(name="imagefolder", path=str(imagefolder_dir / "train")),
                       image_size=8)
    assert list(data.splits) == ["all"]
    splits = make_splits(data, SplitConfig(test_fraction=0.5))
    assert len(splits["train"]) + len(splits["test"]) == 12


def test_imagefolder_errors_name_the_folder(imagefolder_dir, tmp_path):
    (imagefolder_dir / "test" / "dog").mkdir()
    with pytest.raises(UserError, match="test/dog: class folder not present in train"):
        load_source(ImageFolderSource(name="imagefolder", path=str(imagefolder_dir)), 16)
    with pytest.raises(UserError, match="missing: image folder directory not found"):
        load_source(ImageFolderSource(name="imagefolder", path=str(tmp_path / "missing")), 16)


@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_the_debian_package():
    data = load_source(FashionMNISTSource(name="fashion_mnist"))
    train, test = data.splits["train"], data.splits["test"]
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert 60 < train.images.mean() < 80  # the published mean pixel is 72.9


def _shuffled_classes(counts: dict[int, int], first_key: int = 0) -> ImageSet:
    """Classes interleaved in a fixed shuffled order, keys increasing with position."""
    labels = np.concatenate([np.full(n, label, np.int64) for label, n in counts.items()])
    labels = np.random.default_rng(1).permutation(labels)
    keys = first_key + 3 * np.arange(len(labels), dtype=np.int64)
    return ImageSet(np.zeros((len(labels), 2, 2, 1), np.uint8), labels, keys)


@pytest.fixture
def uneven_splits() -> dict[str, ImageSet]:
    return {"train": _shuffled_classes({0: 10, 1: 3, 2: 7}),
            "test": _shuffled_classes({0: 4, 1: 4, 2: 4}, first_key=1000),
            "unlabeled": _shuffled_classes({UNLABELED: 9}, first_key=2000)}


def test_cap_keeps_min_of_cap_and_available_per_class_in_source_order(uneven_splits):
    capped = cap_per_class(uneven_splits, {"train": 5, "unlabeled": 4}, seed=0)
    train = capped["train"]
    assert np.bincount(train.labels).tolist() == [5, 3, 5]
    assert (np.diff(train.keys) > 0).all()  # the split's own order, not the draw's
    assert np.isin(train.keys, uneven_splits["train"].keys).all()
    original = dict(zip(uneven_splits["train"].keys.tolist(),
                        uneven_splits["train"].labels.tolist(), strict=True))
    assert [original[key] for key in train.keys.tolist()] == train.labels.tolist()
    assert len(capped["unlabeled"]) == 4  # unlabeled images are capped as one class
    assert capped["test"] is uneven_splits["test"]  # not named: untouched, not copied


def test_cap_is_seeded_and_each_split_draws_on_its_own(uneven_splits):
    first = cap_per_class(uneven_splits, {"train": 2, "test": 2}, seed=3)
    again = cap_per_class(uneven_splits, {"train": 2, "test": 2}, seed=3)
    other = cap_per_class(uneven_splits, {"train": 2, "test": 2}, seed=4)
    train_only = cap_per_class(uneven_splits, {"train": 2}, seed=3)
    for split in ("train", "test"):
        assert first[split].keys.tolist() == again[split].keys.tolist()
        assert first[split].keys.tolist() != other[split].keys.tolist()
    assert train_only["train"].keys.tolist() == first["train"].keys.tolist()


def test_validation_split_is_carved_from_train_and_never_reads_the_official_test():
    from pipeline.data.sources import ImageSet, SourceData, make_splits
    from pipeline.params.data import SplitConfig

    def image_set(start: int, n: int) -> ImageSet:
        keys = np.arange(start, start + n, dtype=np.int64)
        return ImageSet(np.zeros((n, 4, 4, 1), np.uint8), keys % 5, keys)

    source = SourceData({"train": image_set(0, 500), "test": image_set(1000, 100)},
                        [str(c) for c in range(5)])
    official = make_splits(source, SplitConfig())
    assert official["test"].keys.min() == 1000
    carved = make_splits(source, SplitConfig(validation=True, test_fraction=0.2, seed=3))
    assert len(carved["train"]) == 400 and len(carved["test"]) == 100
    assert carved["test"].keys.max() < 1000  # the official test split is never used
    assert not set(carved["train"].keys) & set(carved["test"].keys)
    assert np.bincount(carved["test"].labels).tolist() == [20] * 5  # stratified

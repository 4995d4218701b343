"""CIFAR-10 and CIFAR-100 in the official python pickle format.

The official files are pickles, so they are read with an Unpickler that only resolves the
globals a numpy array needs; anything else in the file is refused, not executed. (Shards
themselves are never unpickled: they hold `.npy` without pickle.)
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.sources.base import (
    ImageSet,
    SourceData,
    check_labels,
    require_dir,
    require_file,
)
from pipeline.errors import UserError
from pipeline.params.data import CIFARSource

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how protocol-2 pickles spell byte strings
}


class SafeUnpickler(pickle.Unpickler):
    """Resolves only the numpy/builtin globals of CIFAR's files; refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}'")


def read_pickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = SafeUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, OSError) as exc:
        raise UserError(f"{path}: not a CIFAR python pickle ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a CIFAR python pickle (no dictionary inside)")
    return {key.decode() if isinstance(key, bytes) else key: value
            for key, value in data.items()}


def _field(path: Path, batch: dict[str, Any], key: str) -> Any:
    if key not in batch:
        raise UserError(f"{path}: missing '{key}' (is this the python version of CIFAR?)")
    return batch[key]


def _read_batches(paths: list[Path], label_key: str, num_classes: int, key_offset: int
                  ) -> ImageSet:
    images, labels = [], []
    for path in paths:
        batch = read_pickle(path)
        data = np.asarray(_field(path, batch, "data"))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise UserError(f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} "
                            f"{list(data.shape)}")
        batch_labels = np.asarray(_field(path, batch, label_key), dtype=np.int64)
        check_labels(path, batch_labels, len(data), num_classes)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    labels_array = np.concatenate(labels)
    keys = np.arange(len(labels_array), dtype=np.int64) + key_offset
    return ImageSet(np.ascontiguousarray(np.concatenate(images)), labels_array, keys)


def load_cifar(cfg: CIFARSource) -> SourceData:
    directory = require_dir(cfg.path, f"{cfg.name} (python version)")
    if cfg.name == "cifar10":
        meta = read_pickle(require_file(directory, ["batches.meta"], "CIFAR-10 metadata"))
        names_key, label_key = "label_names", "labels"
        train_files = [require_file(directory, [f"data_batch_{i}"], "CIFAR-10 batch")
                       for i in range(1, 6)]
        test_files = [require_file(directory, ["test_batch"], "CIFAR-10 batch")]
    else:
        meta = read_pickle(require_file(directory, ["meta"], "CIFAR-100 metadata"))
        names_key, label_key = f"{cfg.labels}_label_names", f"{cfg.labels}_labels"
        train_files = [require_file(directory, ["train"], "CIFAR-100 split")]
        test_files = [require_file(directory, ["test"], "CIFAR-100 split")]
    class_names = [str(name) for name in _field(directory / "meta", meta, names_key)]
    train = _read_batches(train_files, label_key, len(class_names), 0)
    test = _read_batches(test_files, label_key, len(class_names), len(train))
    return SourceData({"train": train, "test": test}, class_names)

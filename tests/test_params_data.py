"""Params of the data path: sources, shard writers, the run's `data` section, views."""

from __future__ import annotations

import pytest

from pipeline.params.base import ParamsError
from pipeline.params.data import FashionMNISTSource
from pipeline.params.schema import validate_params


def _params(dataset: dict, run: dict | None = None) -> dict:
    return {"datasets": {"d": dataset},
            "runs": {"r": {"dataset": "d", "backbone": {"name": "small_cnn"},
                           "method": {"name": "simclr"}, **(run or {})}}}


def _errors(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ParamsError) as info:
        validate_params(data)
    return info.value.errors


def test_every_source_validates():
    for source in ({"name": "digits"}, {"name": "fashion_mnist"},
                   {"name": "mnist", "path": "m"}, {"name": "cifar10", "path": "c"},
                   {"name": "cifar100", "path": "c", "labels": "coarse"},
                   {"name": "stl10", "path": "s"},
                   {"name": "imagefolder", "path": "i"}):
        validate_params(_params({"source": source, "image_size": 64}))
    assert FashionMNISTSource(name="fashion_mnist").path == "/usr/share/datasets/fashion-mnist"


def test_source_errors_name_the_key():
    errors = _errors(_params({"source": {"name": "imagenet"}}))
    assert errors[0][0] == "datasets.d.source.name" and "stl10" in errors[0][1]
    errors = _errors(_params({"source": {"name": "imagefolder", "path": "x"}}))
    assert errors == [("datasets.d.image_size",
                       "required key is missing (imagefolder decodes every image to this side)")]
    errors = _errors(_params({"source": {"name": "digits"},
                              "shards": {"samples_per_shard": 0}}))
    assert errors == [("datasets.d.shards.samples_per_shard", "must be > 0")]
    # retired: the shard stage writes by Ray tasks, as many at once as `ray:` has CPUs
    errors = _errors(_params({"source": {"name": "digits"}, "shards": {"workers": 2}}))
    assert errors == [("datasets.d.shards.workers", "unknown key")]


def test_unlabeled_split_only_where_it_exists_and_without_labels():
    stl = {"source": {"name": "stl10", "path": "s"}}
    validate_params(_params(stl, {"data": {"loader": "stream",
                                           "splits": ["train", "unlabeled"]}}))
    errors = _errors(_params({"source": {"name": "digits"}},
                             {"data": {"splits": ["unlabeled"]}}))
    assert errors[0][0] == "runs.r.data.splits" and "no unlabeled split" in errors[0][1]
    errors = _errors(_params(stl, {"method": {"name": "supervised"},
                                   "data": {"splits": ["train", "unlabeled"]}}))
    assert "needs labels" in errors[0][1]
    errors = _errors(_params(stl, {"data": {"splits": ["test"]}}))
    assert "unknown split 'test'" in errors[0][1]


def test_data_and_views_values_are_checked():
    errors = _errors(_params({"source": {"name": "digits"}},
                             {"data": {"on_corrupt": "ignore"},
                              "views": {"multi_resolution": [[1.0, 0.5], [0.5, 1.0]]}}))
    keys = sorted(key for key, _ in errors)
    assert keys == ["runs.r.data.on_corrupt", "runs.r.views"]


def test_scale_controls_are_checked_at_their_keys():
    validate_params(_params({"source": {"name": "stl10", "path": "s"}, "image_size": 32,
                             "max_per_class": {"train": 100, "unlabeled": 1000,
                                               "transfer_test": 5}}))
    errors = _errors(_params({"source": {"name": "digits"}, "image_size": 0,
                              "max_per_class": {"train": 0, "val": 3}}))
    assert sorted(errors) == [
        ("datasets.d.image_size", "must be > 0"),
        ("datasets.d.max_per_class.train", "must be > 0"),
        ("datasets.d.max_per_class.val", "must be one of 'train', 'test', 'unlabeled', "
                                         "'transfer_train' or 'transfer_test'")]
    errors = _errors(_params({"source": {"name": "digits"}, "split": {"seed": -1},
                              "max_per_class": {"train": 5}}))
    assert errors == [("datasets.d.split.seed", "must be >= 0")]  # numpy seeds the cap
    errors = _errors(_params({"source": {"name": "stl10", "path": "s", "unlabeled": False},
                              "max_per_class": {"unlabeled": 10}}))
    assert errors == [("datasets.d.max_per_class", "unlabeled: this source has no unlabeled "
                                                   "split (stl10 with unlabeled: true has one)")]
    errors = _errors(_params({"source": {"name": "imagefolder", "path": "i",
                                         "image_size": 64}}))  # where it used to be
    assert errors == [("datasets.d.source",
                       "image_size: moved up one level, to datasets.<name>.image_size")]

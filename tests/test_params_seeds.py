"""Repeating a run over seeds with YAML merge keys, and transfer targets in params."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]

SEEDED = """
datasets:
  digits: {source: {name: digits}, split: {heldout_classes: [9]}}
runs:
  simclr: &simclr
    dataset: digits
    backbone: {name: small_cnn}
    method: {name: simclr, temperature: 0.5}
  simclr-s1: {<<: *simclr, seed: 1}
  simclr-s2: {<<: *simclr, seed: 2}
"""


def test_merge_keys_repeat_a_run_over_seeds(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text(SEEDED)
    params = load_params(path)
    assert [run.seed for run in params.runs.values()] == [0, 1, 2]
    assert params.runs["simclr-s2"].method == params.runs["simclr"].method


def test_duplicate_keys_are_still_errors_next_to_merge_keys(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text(SEEDED.replace("seed: 2}", "seed: 2, seed: 3}"))
    with pytest.raises(ParamsError, match="seed: duplicate key"):
        load_params(path)


def test_transfer_target_must_name_a_dataset(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text(SEEDED.replace("  simclr-s1:", "    transfer: [{dataset: mnist}]\n"
                                                "  simclr-s1:"))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert info.value.errors[0][0] == "runs.simclr.transfer.0.dataset"
    assert "unknown dataset 'mnist'" in info.value.errors[0][1]


def test_transfer_defaults_resolve_to_held_out_classes_or_other_datasets(tmp_path: Path):
    from pipeline.evaluate.transfer import feature_splits, transfer_targets

    path = tmp_path / "params.yaml"
    path.write_text(SEEDED.replace("runs:", "  other: {source: {name: digits}}\nruns:")
                    .replace("seed: 2}", "seed: 2, transfer: [{dataset: other}, "
                             "{train_split: train, test_split: test}]}"))
    params = load_params(path)
    assert [(t.name, t.dataset, t.train_split, t.test_split)
            for t in transfer_targets(params, "simclr")] == [
        ("digits_heldout", "digits", "transfer_train", "transfer_test")]
    targets = transfer_targets(params, "simclr-s2")
    assert [(t.name, t.train_split, t.test_split) for t in targets] == [
        ("other", "train", "test"), ("digits_train_test", "train", "test")]
    assert feature_splits(params, "simclr-s2") == [
        ("digits", "train"), ("digits", "test"), ("other", "train"), ("other", "test")]

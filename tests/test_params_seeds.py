"""Repeating a run over seeds with YAML merge keys, and transfer targets in params."""

from __future__ import annotations

import subprocess
import sys
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


def test_finetune_is_off_by_default_and_carried_to_the_resolved_target(tmp_path: Path):
    from pipeline.evaluate.transfer import transfer_targets

    repository = load_params(ROOT / "params.yaml")
    assert all(target.finetune.epochs == 0 for run in repository.runs
               for target in transfer_targets(repository, run))
    path = tmp_path / "params.yaml"
    path.write_text(SEEDED.replace("seed: 2}", "seed: 2, transfer: [{finetune: {epochs: 3, "
                                   "lr: 1e-4, crop_scale: null, flip: 0.5}}]}"))
    [target] = transfer_targets(load_params(path), "simclr-s2")
    assert target.name == "digits_heldout"
    assert (target.finetune.epochs, target.finetune.lr, target.finetune.crop_scale,
            target.finetune.flip, target.finetune.batch_size) == (3, 1e-4, None, 0.5, 128)


@pytest.mark.parametrize(("finetune", "key", "message"), [
    ("{lr: 0}", "finetune.lr", "must be > 0"),
    ("{epochs: -1}", "finetune.epochs", "must be >= 0"),
    ("{batch_size: 0}", "finetune.batch_size", "must be > 0"),
    ("{flip: 2}", "finetune.flip", "must be <= 1"),
    ("{epoch: 3}", "finetune.epoch", "unknown key"),
    ("{crop_scale: [0.9, 0.2]}", "finetune",
     "crop_scale must be [low, high] with 0 < low <= high <= 1"),
])
def test_finetune_errors_name_the_yaml_key(tmp_path: Path, finetune: str, key: str,
                                           message: str):
    path = tmp_path / "params.yaml"
    path.write_text(SEEDED.replace("seed: 2}", f"seed: 2, transfer: [{{}}, "
                                   f"{{finetune: {finetune}}}]}}"))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert info.value.lines() == [f"{path}: runs.simclr-s2.transfer.1.{key}: {message}"]


def test_transfer_stage_exits_2_with_one_line_on_a_bad_finetune_value(tmp_path: Path):
    (tmp_path / "params.yaml").write_text(
        SEEDED.replace("seed: 1}", "seed: 1, transfer: [{finetune: {lr: -1}}]}"))
    done = subprocess.run([sys.executable, "-m", "stages.transfer", "simclr"], cwd=tmp_path,
                          capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip() == "params.yaml: runs.simclr-s1.transfer.0.finetune.lr: must be > 0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]

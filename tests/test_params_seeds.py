"""Seeds written once, the report's comparisons, and transfer targets in params."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.params.base import ParamsError
from pipeline.params.schema import load_params

ROOT = Path(__file__).resolve().parents[1]

SEEDED = """
datasets:
  digits: {source: {name: digits}, split: {heldout_classes: [9]}}
seeds: [0, 1, 2]
runs:
  simclr: {dataset: digits, backbone: {name: small_cnn}, method: {name: simclr}}
  simclr-e2: {dataset: digits, backbone: {name: small_cnn}, method: {name: simclr},
              train: {epochs: 2}}
  simclr-e3: {dataset: digits, backbone: {name: small_cnn}, method: {name: simclr},
              train: {epochs: 3}}
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return load_params(path)


def test_seeds_are_written_once_for_every_run(tmp_path: Path):
    params = load(tmp_path, SEEDED)
    assert params.seeds == [0, 1, 2]
    from pipeline.resolved.pretrain import PretrainParams

    pretraining = PretrainParams(run=params.pretraining("simclr-e2"), seeds=params.seeds,
                                 num_workers=1)
    assert [pretraining.seeded(s).seed for s in params.seeds] == [0, 1, 2]
    assert pretraining.seeded(1).train.epochs == 2
    assert load(tmp_path, SEEDED.replace("seeds: [0, 1, 2]\n", "")).seeds == [0]


@pytest.mark.parametrize(("edit", "line"), [
    (("seeds: [0, 1, 2]", "seeds: [0, 1, 1]"), "seeds: seeds must be distinct, got [0, 1, 1]"),
    (("seeds: [0, 1, 2]", "seeds: []"), "seeds: list should have at least 1 item after "
                                        "validation, not 0"),
    (("method: {name: simclr}}", "method: {name: simclr}, seed: 3}"),
     "runs.simclr.seed: seeds are set once for all runs, in the top-level `seeds:` list"),
])
def test_seed_errors_name_the_key(tmp_path: Path, edit: tuple[str, str], line: str):
    with pytest.raises(ParamsError) as info:
        load(tmp_path, SEEDED.replace(*edit, 1))
    assert info.value.lines() == [f"{tmp_path / 'params.yaml'}: {line}"]


def test_aliases_are_refused_because_dvc_exp_run_would_lose_edits(tmp_path: Path):
    text = SEEDED.replace("  simclr: {", "  simclr: &run {").replace(
        "  simclr-e2: {dataset: digits, backbone: {name: small_cnn}, method: {name: simclr},\n"
        "              train: {epochs: 2}}", "  simclr-e2: *run")
    with pytest.raises(ParamsError, match=r"line 7: YAML aliases .* are not supported"):
        load(tmp_path, text)


@pytest.mark.parametrize(("report", "line"), [
    ("{control: [nope]}", "report.control.0: unknown run 'nope'"),
    ("{comparisons: [[simclr, missing]]}", "report.comparisons.0: unknown run 'missing'"),
    ("{comparisons: [[simclr, simclr]]}", "report.comparisons.0: compares run 'simclr' with "
                                          "itself"),
    ("{supervised: [simclr, simclr-e2]}", "report.supervised: one run per dataset, got "
                                          "several for 'digits'"),
])
def test_report_errors_name_the_key(tmp_path: Path, report: str, line: str):
    with pytest.raises(ParamsError) as info:
        load(tmp_path, SEEDED + f"report: {report}\n")
    assert any(line in text for text in info.value.lines()), info.value.lines()


def test_a_verdict_needs_two_seeds(tmp_path: Path):
    text = SEEDED.replace("seeds: [0, 1, 2]", "seeds: [0]")
    load(tmp_path, text + "report: {control: [simclr]}\n")  # differences, no verdicts: fine
    with pytest.raises(ParamsError) as info:
        load(tmp_path, text + "report: {comparisons: [[simclr-e2, simclr]]}\n")
    assert info.value.lines()[0].endswith(
        "report.comparisons: a verdict needs at least 2 seeds, seeds has 1")


def test_study_stage_stops_before_writing_on_a_one_seed_verdict(tmp_path: Path):
    (tmp_path / "params.yaml").write_text(SEEDED.replace("seeds: [0, 1, 2]", "seeds: [0]")
                                          + "report: {comparisons: [[simclr-e2, simclr]]}\n")
    done = subprocess.run([sys.executable, "-m", "stages.params"], cwd=tmp_path,
                          capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip() == ("params.yaml: report.comparisons: a verdict needs at least "
                                   "2 seeds, seeds has 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize(("ray", "reruns_pretrain"), [
    ("ray: {num_workers: 2}\n", True),  # the ranks: other views, other shards per reader
    ("ray: {address: auto, cpus_per_worker: 2, storage_path: s3://b/c, max_failures: 1}\n",
     False),
])
def test_only_ray_num_workers_reaches_the_resolved_params(tmp_path: Path, ray: str,
                                                           reruns_pretrain: bool):
    """`ray.num_workers` decides what each rank trains on, so the pretrain stage's resolved
    file (its DVC dep) carries it; the rest of `ray:` changes no resolved file."""
    from pipeline.resolved.write import stage_params

    def resolved(text: str) -> dict[Path, dict]:
        return {path: model.model_dump(mode="json")
                for path, model in stage_params(load(tmp_path, text)).items()}

    before, after = resolved(SEEDED), resolved(SEEDED + ray)
    changed = sorted(str(path) for path in before if before[path] != after[path])
    pretrain = sorted(f"resolved/pretrain/{name}.json" for name in ("simclr", "simclr-e2",
                                                                    "simclr-e3"))
    assert changed == (pretrain if reruns_pretrain else [])
    assert before[Path(pretrain[0])]["num_workers"] == 1


def test_transfer_target_must_name_a_dataset(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text(SEEDED.replace("method: {name: simclr}}",
                                   "method: {name: simclr}, transfer: [{dataset: mnist}]}", 1))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert info.value.errors[0][0] == "runs.simclr.transfer.0.dataset"
    assert "unknown dataset 'mnist'" in info.value.errors[0][1]


def test_transfer_defaults_resolve_to_held_out_classes_or_other_datasets(tmp_path: Path):
    from pipeline.resolved.write import feature_splits, transfer_targets

    path = tmp_path / "params.yaml"
    path.write_text(SEEDED.replace("seeds:", "  other: {source: {name: digits}}\nseeds:")
                    .replace("epochs: 3}}", "epochs: 3}, transfer: [{dataset: other}, "
                             "{train_split: train, test_split: test}]}"))
    params = load_params(path)
    assert [(t.name, t.dataset, t.train_split, t.test_split)
            for t in transfer_targets(params, "simclr")] == [
        ("digits_heldout", "digits", "transfer_train", "transfer_test")]
    targets = transfer_targets(params, "simclr-e3")
    assert [(t.name, t.train_split, t.test_split) for t in targets] == [
        ("other", "train", "test"), ("digits_train_test", "train", "test")]
    assert feature_splits(params.runs["simclr-e3"], targets) == [
        ("digits", "train"), ("digits", "test"), ("other", "train"), ("other", "test")]


def test_finetune_is_off_by_default_and_carried_to_the_resolved_target(tmp_path: Path):
    from pipeline.resolved.write import transfer_targets

    repository = load_params(ROOT / "params.yaml")
    assert all(target.finetune.epochs == 0 for run in repository.runs
               for target in transfer_targets(repository, run))
    path = tmp_path / "params.yaml"
    path.write_text(SEEDED.replace("epochs: 3}}", "epochs: 3}, transfer: [{finetune: "
                                   "{epochs: 3, lr: 1e-4, crop_scale: null, flip: 0.5}}]}"))
    [target] = transfer_targets(load_params(path), "simclr-e3")
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
    path.write_text(SEEDED.replace("epochs: 3}}", f"epochs: 3}}, transfer: [{{}}, "
                                   f"{{finetune: {finetune}}}]}}"))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert info.value.lines() == [f"{path}: runs.simclr-e3.transfer.1.{key}: {message}"]


def test_params_stage_exits_2_with_one_line_on_a_bad_finetune_value(tmp_path: Path):
    (tmp_path / "params.yaml").write_text(
        SEEDED.replace("epochs: 2}}", "epochs: 2}, transfer: [{finetune: {lr: -1}}]}"))
    done = subprocess.run([sys.executable, "-m", "stages.params"], cwd=tmp_path,
                          capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip() == "params.yaml: runs.simclr-e2.transfer.0.finetune.lr: must be > 0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]

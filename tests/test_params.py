import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.params.base import ParamsError
from pipeline.params.schema import load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def errors_of(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ParamsError) as info:
        validate_params(data)
    return info.value.errors


def test_repository_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert {"random", "simclr", "supervised"} <= set(params.runs)
    assert params.runs["simclr"].method.temperature == 0.5


def test_bound_violation_names_the_yaml_path(data):
    data["runs"]["simclr"]["method"]["temperature"] = -1
    assert errors_of(data) == [("runs.simclr.method.temperature", "must be > 0")]


def test_unknown_key_is_an_error(data):
    data["runs"]["simclr"]["method"]["temprature"] = 0.1
    assert errors_of(data) == [("runs.simclr.method.temprature", "unknown key")]


def test_unknown_top_level_section(data):
    data["rnus"] = {}
    assert errors_of(data) == [("rnus", "unknown key")]


def test_unknown_method_name(data):
    data["runs"]["simclr"]["method"]["name"] = "simclrr"
    [(path, message)] = errors_of(data)
    assert path == "runs.simclr.method.name"  # the key to fix, not its section
    assert "simclrr" in message and "simclr" in message


def test_unknown_backbone_name_names_its_key(data):
    data["runs"]["simclr"]["backbone"]["name"] = "resnet9000"
    [(path, _)] = errors_of(data)
    assert path == "runs.simclr.backbone.name"


def test_wrong_type(data):
    data["runs"]["simclr"]["train"]["epochs"] = "many"
    assert errors_of(data) == [("runs.simclr.train.epochs", "must be an integer, got 'many'")]


def test_missing_required_key(data):
    del data["runs"]["simclr"]["backbone"]
    assert errors_of(data) == [("runs.simclr.backbone", "required key is missing")]


def test_every_error_is_reported(data):
    data["runs"]["simclr"]["train"]["batch_size"] = 0
    data["evaluate"]["knn"]["k"] = -3
    paths = {path for path, _ in errors_of(data)}
    assert paths == {"runs.simclr.train.batch_size", "evaluate.knn.k"}


def test_unknown_dataset_reference(data):
    data["runs"]["simclr"]["dataset"] = "cifar10"
    [(path, message)] = errors_of(data)
    assert path == "runs.simclr.dataset" and "cifar10" in message


def test_model_validator_error_names_the_section(data):
    data["runs"]["simclr"]["views"]["crop_scale"] = [0.9, 0.2]
    [(path, message)] = errors_of(data)
    assert path == "runs.simclr.views" and "crop_scale" in message


def test_list_item_error(data):
    data["datasets"]["digits"]["split"]["heldout_classes"] = [7, -1]
    assert errors_of(data) == [("datasets.digits.split.heldout_classes.1", "must be >= 0")]


def test_scientific_notation_is_a_number(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("lr: 2.0e-3", "lr: 1e-3")
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").runs["simclr"].train.optimizer.lr == 1e-3


def test_duplicate_key_is_an_error(tmp_path):
    (tmp_path / "p.yaml").write_text("runs: {}\nruns: {}\ndatasets: {}\n")
    with pytest.raises(ParamsError) as info:
        load_params(tmp_path / "p.yaml")
    assert info.value.errors == [("runs", "duplicate key (line 2)")]


def test_invalid_yaml_and_missing_file(tmp_path):
    (tmp_path / "p.yaml").write_text("runs: [\n")
    with pytest.raises(ParamsError, match="invalid YAML"):
        load_params(tmp_path / "p.yaml")
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "absent.yaml")


def test_stage_prints_one_line_per_error_exits_2_and_writes_nothing(tmp_path, data):
    bad = copy.deepcopy(data)
    bad["runs"]["simclr"]["method"]["temperature"] = 0
    bad["datasets"]["digits"]["shards"]["samples_per_shard"] = -5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run([sys.executable, "-m", "stages.params"], cwd=tmp_path,
                            capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert sorted(result.stderr.strip().splitlines()) == [
        "params.yaml: datasets.digits.shards.samples_per_shard: must be > 0",
        "params.yaml: runs.simclr.method.temperature: must be > 0",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_stage_rejects_unknown_entry(tmp_path, data):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, "-m", "stages.pretrain", "nope"], cwd=tmp_path,
                            capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.strip() == "params.yaml: runs.nope: no such entry in runs"

"""Method and regulator params: bad values name the YAML key a user would edit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.params.base import ParamsError
from pipeline.params.schema import load_params, validate_params

ROOT = Path(__file__).resolve().parents[2]


STUDY = ROOT / "studies" / "fashion_mnist" / "params.yaml"  # every method of the paper


@pytest.fixture
def data() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def study() -> dict:
    return yaml.safe_load(STUDY.read_text())


def errors_of(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ParamsError) as info:
        validate_params(data)
    return info.value.errors


def test_default_runs_include_a_regulated_one_and_the_study_every_method():
    assert load_params(ROOT / "params.yaml").runs["simclr_dsa"].regulator.prior == "ema"
    runs = load_params(STUDY).runs  # the default leaves byol and triplet to the study
    assert {"simclr", "byol", "triplet", "supervised", "random"} <= {
        run.method.name for run in runs.values()}
    assert runs["triplet"].method.skip == 1 and runs["triplet"].method.k == 9


def test_regulator_on_a_method_without_embeddings_is_an_error(data):
    data["runs"]["supervised"]["regulator"] = {"name": "dsa"}
    [(path, message)] = errors_of(data)
    assert path == "runs.supervised.regulator" and "embedding method" in message


def test_auto_skip_needs_the_class_count(study):
    study["runs"]["triplet"]["method"]["skip"] = "auto"
    [(path, message)] = errors_of(study)
    assert path.startswith("runs.triplet.method") and "expected_classes" in message
    study["runs"]["triplet"]["method"]["expected_classes"] = 7
    assert validate_params(study).runs["triplet"].method.skip == "auto"


def test_checkpoint_prior_needs_a_path_and_bad_choices_name_the_key(data):
    data["runs"]["simclr_dsa"]["regulator"]["prior"] = "checkpoint"
    [(path, message)] = errors_of(data)
    assert path.startswith("runs.simclr_dsa.regulator") and "prior_path" in message
    data["runs"]["simclr_dsa"]["regulator"]["prior"] = "imagenet"
    [(path, _)] = errors_of(data)
    assert path == "runs.simclr_dsa.regulator.prior"


@pytest.mark.parametrize(("method", "key", "value", "message"), [
    ("barlow_twins", "lambda_offdiagonal", -1.0, "must be >= 0"),
    ("barlow_twins", "lambda_off_diagonal", 0.1, "unknown key"),
    ("vicreg", "variance_weight", -1.0, "must be >= 0"),
    ("vicreg", "covariance", 1.0, "unknown key"),
    ("moco", "queue_size", 0, "must be > 0"),
    ("moco", "momentum_schedule", "linear", "constant"),
    ("moco", "gather_distributed", False, "unknown key"),  # keys are always gathered
])
def test_new_bases_name_a_bad_key(data, method, key, value, message):
    data["runs"]["new"] = {"dataset": "digits", "backbone": {"name": "small_cnn"},
                           "method": {"name": method, key: value}}
    [(path, text)] = errors_of(data)
    assert path == f"runs.new.method.{key}" and message in text


def test_new_bases_compose_with_dsa(data):
    for method in ("barlow_twins", "vicreg", "moco"):
        data["runs"][method] = {"dataset": "digits", "backbone": {"name": "small_cnn"},
                                "method": {"name": method}, "regulator": {"name": "dsa"}}
    runs = validate_params(data).runs
    assert runs["moco"].method.base_momentum == 0.99
    assert runs["moco"].method.momentum_schedule == "constant"
    assert runs["barlow_twins"].regulator.prior == "ema"

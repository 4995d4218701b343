"""Every committed study's params validate, and the powered Fashion-MNIST study keeps the
design issue 24 asks for (so a later edit cannot quietly weaken it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.params.schema import load_params

STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.mark.parametrize("study", sorted(p.parent.name for p in STUDIES.glob("*/params.yaml")))
def test_study_params_validate(study: str):
    load_params(STUDIES / study / "params.yaml")


def test_the_powered_study_has_its_seeds_images_test_split_and_comparisons():
    power = load_params(STUDIES / "fashion_mnist_power" / "params.yaml")
    original = load_params(STUDIES / "fashion_mnist" / "params.yaml")
    assert len(power.seeds) >= 5
    dataset = power.datasets["fashion_mnist"]
    assert dataset.max_per_class["train"] >= 500
    assert "test" not in dataset.max_per_class and not dataset.split.validation
    assert list(power.runs) == list(original.runs)
    assert power.report.comparisons == original.report.comparisons
    tuning = load_params(STUDIES / "fashion_mnist_power_tuning" / "params.yaml")
    assert len(tuning.seeds) >= 2
    assert all(d.split.validation for d in tuning.datasets.values())
    batch = {r.train.batch_size for r in power.runs.values() if r.train.epochs}
    assert {r.train.batch_size for r in tuning.runs.values()} == batch

"""The prepared GPU check runs end to end in its CPU mode, so it cannot rot before a GPU
session runs it for real."""

from __future__ import annotations

import json

import pytest

from benchmarks.gpu_check import METHODS, main


def test_cpu_smoke_covers_every_part(tmp_path):
    out = tmp_path / "gpu_check.json"
    results = main(["--cpu-smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    expected = {m for m in METHODS} | {f"{m}+dsa" for m in METHODS if m != "supervised"}
    assert set(results["smoke"]) == expected
    for row in results["smoke"].values():
        assert row["finite"] and row["sync_sites"] == {"skipped": "needs CUDA"}
    for name, row in results["agreement"].items():
        # CPU bf16 autocast against fp32; triplet's and DSA's losses run in fp32
        assert row["max_relative_gap"] < (1e-3 if name == "triplet" else 0.1), name
    throughput = results["throughput"]
    assert throughput["simclr stream"]["images_per_second"] > 0
    assert throughput["simclr memory compile"] == {"skipped": "needs CUDA"}
    assert set(throughput["dsa_overhead"]) == {"simclr", "byol"}
    assert results["features"]["images_per_second"] > 0
    probes = results["probes"]
    assert probes["linear"]["linear_solver"] == "minibatch"  # the path ImageNet's size takes
    assert len([k for k in probes["linear"] if k.startswith("linear_val_top1_wd")]) == 5
    # 20 classes: well above chance (0.05) on both probes
    assert probes["knn20_top1"] > 0.2 and probes["linear"]["linear_top1"] > 0.2
    assert probes["seconds"] == pytest.approx(probes["knn_seconds"] + probes["linear_seconds"])

"""Transfer to another dataset end to end, on real Fashion-MNIST images: a digits encoder is
probed and fine-tuned on a Fashion-MNIST subset through the stages' command lines.

The subset (the first 2,000 train and 500 test images of the Debian package's IDX files,
written back as IDX) keeps the test under a minute; the source, shards, features and
transfer code paths are the ones a full Fashion-MNIST -> MNIST transfer runs.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.data.sources.idx import read_idx

ROOT = Path(__file__).resolve().parents[2]
FASHION = Path("/usr/share/datasets/fashion-mnist")
SUBSET = {"train": 2000, "t10k": 500}

pytestmark = pytest.mark.skipif(not FASHION.is_dir(),
                                reason="apt-get install dataset-fashion-mnist")


def fashion_subset(out: Path) -> Path:
    """The first images of each official split, re-written as (uncompressed) IDX files."""
    for prefix, count in SUBSET.items():
        for kind in ("images", "labels"):
            rank = 3 if kind == "images" else 1
            source = next(FASHION.glob(f"{prefix}-{kind}-idx{rank}-ubyte*"))
            array = read_idx(source)[:count]
            header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(
                f">{array.ndim}I", *array.shape)
            (out / f"{prefix}-{kind}-idx{rank}-ubyte").write_bytes(
                header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return out


def run_stage(project: Path, module: str, *name: str, **extra_env: str) -> None:
    done = subprocess.run([sys.executable, "-m", f"stages.{module}", *name], cwd=project,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **extra_env},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_digits_encoder_transfers_to_fashion_mnist(tmp_path: Path, digits_shards: Path,
                                                   ray_env: dict[str, str]):
    from pipeline.nets.backbones import save_encoder
    from pipeline.params.schema import validate_params
    from pipeline.train.launcher import untrained_encoder

    (tmp_path / "fashion").mkdir()
    source = fashion_subset(tmp_path / "fashion")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"]["fashion_mnist"] = {
        "source": {"name": "fashion_mnist", "path": str(source)},
        "split": {"heldout_classes": []}, "shards": {"samples_per_shard": 1000}}
    params.pop("report")  # its control and supervised runs are not here
    params["seeds"] = [0]  # the one encoder written below
    params["runs"] = {"random": {
        "dataset": "digits", "backbone": {"name": "small_cnn", "width": 8},
        "method": {"name": "random"}, "train": {"epochs": 0},
        "transfer": [{"dataset": "fashion_mnist",
                      "finetune": {"epochs": 6, "batch_size": 100}}]}}
    params["evaluate"]["linear"].update(weight_decays=[1e-4, 1e-2], max_iter=100)
    project = tmp_path / "project"
    (project / "data" / "shards").mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(digits_shards, project / "data" / "shards" / "digits")
    run = validate_params(params).runs["random"]
    (project / "models" / "random" / "seed_0").mkdir(parents=True)
    save_encoder(untrained_encoder(run, project / "data/shards/digits"),
                 project / "models" / "random" / "seed_0" / "encoder.pt")

    run_stage(project, "params")
    run_stage(project, "shard", "fashion_mnist", **ray_env)
    run_stage(project, "features", "random", **ray_env)
    run_stage(project, "transfer", "random")

    manifest = json.loads((project / "data/shards/fashion_mnist/manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == SUBSET["train"]
    assert manifest["image_shape"][:2] == [28, 28]
    features = sorted(p.name for p in (project / "features/random/seed_0/fashion_mnist").iterdir())
    assert features == ["test", "train"]
    metrics = json.loads((project / "results/transfer/random.json").read_text())["seed_0"]
    assert list(metrics) == ["fashion_mnist"]  # another dataset: its train/test splits
    target = metrics["fashion_mnist"]
    assert target["num_classes"] == 10 and target["test_size"] == SUBSET["t10k"]
    assert target["linear_top1"] > 0.5  # chance is 0.1: random conv features already help
    assert target["finetune_epochs"] == 6 and target["finetune_top1"] > 0.4  # 0.6 measured

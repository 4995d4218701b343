"""The error contract through the real stage commands: a bad input ends with exactly one
stderr line naming the params key or the file, exit code 2, no traceback, and every file
of the project as it was (nothing written, nothing lost); a normal run prints progress only.

One project serves every case: digits shards, an untrained run with its encoder, cached
features and probe metrics (made in-process), and runs that pretrain on the session's Ray
cluster, joined through RAY_ADDRESS as `scripts/repro.sh` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"backbone": {"name": "small_cnn", "width": 4}, "dataset": "digits"}
PROGRESS = re.compile(r"^\[tiny\] (seed 0 \(1 of 1\)|epoch \d+/\d+ loss .*)$")


def params() -> dict:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["datasets"]["broken"] = data["datasets"]["digits"]  # its shards get corrupted
    data["datasets"]["mnist"] = {"source": {"name": "mnist", "path": "no/such/dir"}}
    data["runs"] = {
        "random": {**SMALL, "method": {"name": "random"}, "train": {"epochs": 0}},
        "tiny": {**SMALL, "method": {"name": "simclr", "temperature": 0.5},
                 "train": {"epochs": 1, "batch_size": 64}},
        "streamed": {**SMALL, "dataset": "broken", "method": {"name": "simclr"},
                     "train": {"epochs": 1, "batch_size": 64},
                     "data": {"loader": "stream", "workers": 0}},
        "dsa_small": {**SMALL, "method": {"name": "simclr"},
                      "regulator": {"name": "dsa", "k": 20}, "train": {"batch_size": 16}},
        "triplet_small": {**SMALL, "method": {"name": "triplet", "skip": 1, "k": 9},
                          "train": {"batch_size": 8}},
        "moco_queue": {**SMALL, "method": {"name": "moco", "queue_size": 100},
                       "train": {"batch_size": 64}},
    }
    data["seeds"] = [0]  # one seed: the stages fail or succeed once
    data["report"] = {"control": ["random"]}
    data["ray"]["cpus_per_worker"] = 1
    data["evaluate"]["linear"].update(weight_decays=[1e-3], max_iter=20)
    return json.loads(json.dumps(data))  # no shared objects: YAML aliases are refused


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_shards: Path, ray_cluster) -> Path:
    from pipeline.params.schema import validate_params

    project = tmp_path_factory.mktemp("contract")
    (project / "params.yaml").write_text(yaml.safe_dump(params(), sort_keys=False))
    shutil.copytree(digits_shards, project / "data" / "shards" / "digits")
    shutil.copytree(digits_shards, project / "data" / "shards" / "broken")
    shard = project / "data" / "shards" / "broken" / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[3000] ^= 0xFF  # one flipped byte: its sha256 no longer matches the manifest
    shard.write_bytes(bytes(data))
    with contextlib.chdir(project):  # the outputs a user would already have
        importlib.import_module("stages.params").main(validate_params(params()))
        for module in ("pretrain", "features", "probe"):
            stage_module = importlib.import_module(f"stages.{module}")
            stage_module.main(*stage_module.STAGE.inputs("random"))
    return project


def snapshot(project: Path) -> dict[str, str]:
    """Every file (Ray's checkpoint storage aside) and a hash of its bytes."""
    return {str(path.relative_to(project)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(project.rglob("*"))
            if path.is_file() and "ray_results" not in path.relative_to(project).parts}


def stage(project: Path, module: str, name: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", f"stages.{module}", name], cwd=project,
                          env=full_env, capture_output=True, text=True, timeout=600)


def fails_with_one_line(project: Path, module: str, name: str, **env: str) -> str:
    """Run a stage that must fail on its input; return its one stderr line."""
    before = snapshot(project)
    done = stage(project, module, name, **env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert snapshot(project) == before  # nothing written, nothing half-written, nothing lost
    return lines[0]


@contextlib.contextmanager
def replaced(path: Path, payload: bytes):
    """`path` holds `payload` for the block, then its own bytes again."""
    original = path.read_bytes()
    path.write_bytes(payload)
    try:
        yield
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("name,line", [
    ("dsa_small", "params.yaml: runs.dsa_small.regulator.k: 20 neighbours need a per-step "
                  "batch larger than 20 (train.batch_size 16)"),
    ("triplet_small", "params.yaml: runs.triplet_small.method.k: skip 1 + k 9 needs 10 "
                      "negatives per anchor, but a per-step batch of 8 has 7 "
                      "(train.batch_size 8)"),
    ("moco_queue", "params.yaml: runs.moco_queue.method.queue_size: 100 is not a multiple of "
                   "the global batch (train.batch_size 64)"),
])
def test_batch_dependent_checks_stop_before_ray_starts(project, tmp_path, name, line):
    ray_tmp = tmp_path / "ray"  # where Ray would create its session, had it started
    ray_tmp.mkdir()
    assert fails_with_one_line(project, "pretrain", name, RAY_TMPDIR=str(ray_tmp)) == line
    assert not any(ray_tmp.iterdir())
    assert not (project / "ray_results").exists()


def test_a_user_error_in_a_ray_worker_is_its_one_line(project, ray_env):
    """The streaming loader finds the corrupt shard inside the Ray worker."""
    shard = project / "data" / "shards" / "broken" / "train-000001.tar"
    line = fails_with_one_line(project, "pretrain", "streamed", **ray_env)
    assert line == (f"{shard}: corrupt shard (sha256 differs from the manifest); set "
                    "data.on_corrupt: skip to drop it")


@pytest.mark.parametrize("scheme", ["", "ray://"], ids=["gcs", "ray_client"])
def test_a_cluster_address_where_nothing_listens_is_one_line(project, scheme):
    """A stale RAY_ADDRESS (a cluster gone since) ends in seconds, not Ray's minutes of
    retries (GCS) or its 30 s connect timeout (Ray Client)."""
    from pipeline.cluster import free_port

    address = f"{scheme}127.0.0.1:{free_port()}"  # a port free now: nothing listens there
    line = fails_with_one_line(project, "features", "random", RAY_ADDRESS=address)
    assert line.startswith(f"RAY_ADDRESS (ray.address: local): cannot join the Ray cluster "
                           f"at {address} (nothing answers there: "), line


def test_duplicate_key_is_named_by_its_full_path(project):
    path = project / "params.yaml"
    lines = path.read_text().splitlines(keepends=True)
    index = next(i for i, text in enumerate(lines) if text.strip() == "temperature: 0.5")
    duplicated = "".join([*lines[:index + 1], lines[index], *lines[index + 1:]])
    with replaced(path, duplicated.encode()):
        line = fails_with_one_line(project, "probe", "random")
    assert line == f"params.yaml: runs.tiny.method.temperature: duplicate key (line {index + 2})"


class RunsCode:
    """Unpickling this would run a shell command (touch the marker)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unreadable_checkpoints_are_one_line_naming_the_file(project, tmp_path):
    from pipeline.layout import encoder_path

    encoder = project / encoder_path("random", 0)
    with replaced(encoder, b"\x00" + random.Random(0).randbytes(4095)):
        assert fails_with_one_line(project, "features", "random") == (
            f"{encoder_path('random', 0)}: not a PyTorch file (corrupt, or written by another "
            "program)")
    marker = tmp_path / "code-ran"
    torch.save({"format": 1, "payload": RunsCode(marker)}, tmp_path / "evil.pt")
    with replaced(encoder, (tmp_path / "evil.pt").read_bytes()):
        assert fails_with_one_line(project, "features", "random") == (
            f"{encoder_path('random', 0)}: refused: a pickle that would load posix.system (code, "
            "not weights); only tensors and plain values are read")
    assert not marker.exists()


def test_corrupt_cached_features_are_one_line_naming_the_file(project):
    from pipeline.layout import features_path

    cached = features_path("random", 0, "digits", "train") / "train-000000.npz"
    with replaced(project / cached, b"PK\x03\x04 half a zip archive"):
        assert fails_with_one_line(project, "probe", "random") == (
            f"{cached}: unreadable feature shard (BadZipFile)")


def test_a_missing_data_path_names_the_key_and_the_file(project):
    line = fails_with_one_line(project, "shard", "mnist")
    assert line == ("params.yaml: datasets.mnist.source.path: no/such/dir: IDX dataset "
                    "directory not found")


def test_a_normal_pretraining_prints_progress_only(project, ray_env):
    done = stage(project, "pretrain", "tiny", **ray_env)
    assert done.returncode == 0, done.stdout + done.stderr
    output = (done.stdout + done.stderr).splitlines()
    assert output and all(PROGRESS.match(line) for line in output), "\n".join(output)
    assert (project / "models" / "tiny" / "seed_0" / "encoder.pt").is_file()

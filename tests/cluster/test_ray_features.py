"""Feature extraction and sharding by Ray tasks on a real multi-node cluster
(`ray.cluster_utils`): the feature shards equal, bit for bit, the single-process path; a
node removed in the middle changes nothing (Ray re-runs its tasks); a corrupt shard or an
encoder that does not fit the images is one line from inside the workers; shards written
by tasks on two nodes equal the local processes' byte for byte. The drivers are separate
processes, as a stage is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.data.reader import split_shards
from pipeline.evaluate.features import load_features
from pipeline.nets.backbones import Encoder, save_encoder
from pipeline.nets.extract import shard_features
from pipeline.params.methods import SmallCNNBackbone

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("features_driver.py")
sys.path.insert(0, str(DRIVER.parent))
from features_driver import BATCH, encoder  # noqa: E402


@pytest.fixture(scope="module")
def two_nodes():
    """A head without CPUs and two worker nodes of one CPU each: the tasks run on both."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    """Digits in shards of 40 images: some thirty tasks per split, so that a node can be
    removed while many are still to run."""
    from pipeline.data.shards import write_shards
    from pipeline.data.sources import load_source, make_splits
    from pipeline.params.data import DigitsSource, SplitConfig

    source = load_source(DigitsSource(name="digits"))
    splits = make_splits(source, SplitConfig(heldout_classes=[7, 8, 9]))
    out = tmp_path_factory.mktemp("small_shards")
    write_shards({"train": splits["train"]}, source.class_names, out, 40, {"name": "digits"})
    return out


def start(cluster, shard_dir: Path, out: Path, *encoder_file: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen([sys.executable, str(DRIVER), cluster.address, str(shard_dir),
                             "train", str(out), *encoder_file], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def drive(cluster, shard_dir: Path, out: Path, *encoder_file: str
          ) -> subprocess.CompletedProcess:
    process = start(cluster, shard_dir, out, *encoder_file)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def single_process(shard_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    shards, _, decoding = split_shards(shard_dir, ["train"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a 1-CPU Ray task computes
    try:
        return shard_features(encoder(), shards, decoding, BATCH, "cpu")
    finally:
        torch.set_num_threads(threads)


def test_two_nodes_equal_one_process_bit_for_bit(two_nodes, digits_shards, tmp_path):
    out = tmp_path / "features"
    result = drive(two_nodes, digits_shards, out)
    assert result.returncode == 0, result.stderr
    shards, count, _ = split_shards(digits_shards, ["train"])
    assert len(shards) > 1  # several tasks
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == count and len(manifest["shards"]) == len(shards)
    features, labels = load_features(out)
    expected, expected_labels = single_process(digits_shards)
    assert features.shape == (count, encoder().feature_dim)
    assert torch.equal(features, expected) and torch.equal(labels, expected_labels)


def test_a_node_removed_mid_extraction_changes_nothing(two_nodes, small_shards, tmp_path):
    """A third node joins, takes tasks, and is killed once the first feature shard is
    written; its tasks (running, or done but not yet fetched) are re-run elsewhere."""
    node = two_nodes.add_node(num_cpus=1)
    two_nodes.wait_for_nodes()
    out = tmp_path / "features"
    process = start(two_nodes, small_shards, out)
    shards, _, _ = split_shards(small_shards, ["train"])
    deadline = time.monotonic() + 120
    written: list[Path] = []
    while not written and process.poll() is None and time.monotonic() < deadline:
        written = list(tmp_path.glob(".features.*/*.npz"))  # atomic_dir's work directory
        time.sleep(0.01)
    assert written and process.poll() is None, "extraction ended before the node was removed"
    assert len(written) < len(shards)
    two_nodes.remove_node(node, allow_graceful=False)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    features, labels = load_features(out)
    expected, expected_labels = single_process(small_shards)
    assert torch.equal(features, expected) and torch.equal(labels, expected_labels)


def test_a_corrupt_shard_is_one_line_from_the_workers(two_nodes, digits_shards, tmp_path):
    broken = tmp_path / "shards"
    shutil.copytree(digits_shards, broken)
    shards, _, _ = split_shards(broken, ["train"])
    victim = Path(shards[-1].url)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = drive(two_nodes, broken, tmp_path / "features")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{victim}: sha256 differs" in lines[0], result.stderr
    assert not list(tmp_path.glob("*features*"))  # nothing written, no work directory left


def test_an_encoder_that_does_not_fit_the_images_is_one_line_from_the_workers(
        two_nodes, digits_shards, tmp_path):
    rgb = tmp_path / "rgb.pt"
    save_encoder(Encoder(SmallCNNBackbone(name="small_cnn", width=4), 3, [0.5] * 3,
                         [0.25] * 3), rgb)
    result = drive(two_nodes, digits_shards, tmp_path / "features", str(rgb))
    assert result.returncode == 2
    shards, _, _ = split_shards(digits_shards, ["train"])
    assert result.stderr.strip().splitlines() == [
        f"error: {rgb}: the encoder takes 3-channel images, {shards[0].url} has 1"]
    assert not list(tmp_path.glob("*features*"))


def test_shards_written_on_two_nodes_equal_the_local_processes_byte_for_byte(
        two_nodes, digits_shards, tmp_path):
    out = tmp_path / "shards"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, str(DRIVER.with_name("shards_driver.py")),
                           two_nodes.address, str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    local = sorted(p.name for p in digits_shards.iterdir())
    assert sorted(p.name for p in out.iterdir()) == local and len(local) > 3
    for name in local:
        assert (out / name).read_bytes() == (digits_shards / name).read_bytes(), name

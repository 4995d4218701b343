"""Feature extraction by Ray tasks on a real 2-node cluster (`ray.cluster_utils`): equal,
bit for bit, to the single-process path, and a corrupt shard is one line from inside the
workers. The drivers are separate processes, as a stage is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.data.reader import split_shards
from pipeline.nets.extract import shard_features

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("features_driver.py")
sys.path.insert(0, str(DRIVER.parent))
from features_driver import encoder  # noqa: E402


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


def drive(cluster, shard_dir: Path, out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, str(DRIVER), cluster.address, str(shard_dir),
                           "train", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_two_nodes_equal_one_process_bit_for_bit(two_nodes, digits_shards, tmp_path):
    result = drive(two_nodes, digits_shards, tmp_path / "features.pt")
    assert result.returncode == 0, result.stderr
    on_ray = torch.load(tmp_path / "features.pt", weights_only=True)
    shards, count, decoding = split_shards(digits_shards, ["train"])
    assert len(shards) > 1  # several tasks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a 1-CPU Ray task computes
    try:
        features, labels = shard_features(encoder(), shards, decoding, 64, "cpu")
    finally:
        torch.set_num_threads(threads)
    assert on_ray["features"].shape == (count, encoder().feature_dim)
    assert torch.equal(on_ray["features"], features)
    assert torch.equal(on_ray["labels"], labels)


def test_a_corrupt_shard_is_one_line_from_the_workers(two_nodes, digits_shards, tmp_path):
    broken = tmp_path / "shards"
    shutil.copytree(digits_shards, broken)
    shards, _, _ = split_shards(broken, ["train"])
    victim = Path(shards[-1].url)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = drive(two_nodes, broken, tmp_path / "features.pt")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and victim.name in lines[0], result.stderr
    assert not (tmp_path / "features.pt").exists()

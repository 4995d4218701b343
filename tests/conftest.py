"""Shared fixtures: one real local Ray cluster per test session, small datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parents[1]
# The longest modules (minutes each, measured by CI's --durations), started first: with
# `-n 2 --dist loadfile --no-loadscope-reorder` (scripts/test.sh) the two workers take
# them in this order and the many short modules fill in behind them.
LONGEST_FIRST = ("test_end_to_end.py", "cluster/test_multinode.py",
                 "train/test_fault_tolerance.py", "test_dvc_sweep.py", "test_study_script.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Reorder the modules, longest first; tests keep their order within a module."""

    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(ROOT / "tests").as_posix()
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (2 CPUs, dashboard on 127.0.0.1), started once per session.

    Started exactly as the pretrain stage starts one; end-to-end stages join it by address.
    """
    import ray

    from pipeline.cluster import init_ray
    from pipeline.params.ray import RayConfig

    init_ray(RayConfig(address="local"), num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_env(ray_cluster) -> dict[str, str]:
    """Environment that makes a stage's subprocess join the session's cluster, as
    `scripts/repro.sh` makes stages join the one it holds open."""
    return {"RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory) -> Path:
    """The embedded default sharded once: train/test over digits 0-6, transfer over 7-9."""
    from pipeline.data.shards import write_shards
    from pipeline.data.sources import load_source, make_splits
    from pipeline.params.data import DigitsSource, SplitConfig

    source = load_source(DigitsSource(name="digits"))
    splits = make_splits(source, SplitConfig(heldout_classes=[7, 8, 9]))
    out = tmp_path_factory.mktemp("shards")
    write_shards(splits, source.class_names, out, 500, {"name": "digits"})
    return out


# Object storage for the cluster tests: a real S3-compatible server (moto's) on 127.0.0.1,
# reached through the standard AWS environment variables, as pyarrow (shards, Ray Train's
# checkpoints), boto3 and every Ray node started after this fixture read them.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
          "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free port of 127.0.0.1; yields a boto3 client for it.

    Sets the fake credentials and `AWS_ENDPOINT_URL_S3` in this process's environment
    for the session (subprocesses and Ray nodes inherit them); restores them after.
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**S3_ENV, "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        import boto3

        yield boto3.client("s3")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def bucket(s3_server, request) -> str:
    """A new, empty bucket on the S3 server, named after the test."""
    import re

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    s3_server.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def http_server(tmp_path_factory):
    """`python -m http.server` on a free port of 127.0.0.1, serving a fresh directory;
    yields (directory, base URL)."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("www")
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
         "--directory", str(root)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    try:
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://...) ..."
        port = int(line.split(" port ")[1].split()[0])
        yield root, f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()

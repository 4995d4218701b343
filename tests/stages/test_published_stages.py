"""The stages with `datasets.<name>.publish` on a real S3-compatible server (moto on
127.0.0.1): shard@ writes the shards straight there (only the manifest stays local),
publish@ records them, then the features stage reads them by URL; a missing bucket, a
tampered shard and an outage (a fault-injecting proxy answering 503 to everything) end
with one line naming the key or URL, exit code 2, and no output written or lost; a missing
checkpoint bucket stops pretraining before Ray starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.fault_proxy import FaultProxy
from pipeline import layout
from pipeline.errors import UserError
from pipeline.layout import features_path
from pipeline.nets.backbones import save_encoder
from pipeline.params.schema import load_params
from pipeline.train.launcher import pretrain, untrained_encoder

ROOT = Path(__file__).resolve().parents[2]


def encoder_path(project: Path, run: str, seed: int) -> Path:
    return project / layout.encoder_path(run, seed)


def stage(project: Path, module: str, *name: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", f"stages.{module}", *name], cwd=project,
                          env=env, capture_output=True, text=True, timeout=600)


def write_params(project: Path, publish_url: str, storage_path: str = "ray_results") -> None:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["datasets"]["digits"]["publish"] = {
        "url": publish_url, "read": {"attempts": 2, "backoff_s": 0.01}}
    def tiny(**keys) -> dict:  # a fresh dict each: shared ones would dump as YAML aliases
        return {"dataset": "digits", "backbone": {"name": "small_cnn", "width": 4}, **keys}

    data["runs"] = {"random": tiny(method={"name": "random"}, train={"epochs": 0}),
                    "tiny": tiny(method={"name": "supervised"},
                                 train={"epochs": 1, "batch_size": 64})}
    data["seeds"] = [0]
    data["report"] = {"control": ["random"], "supervised": ["tiny"], "comparisons": []}
    data["ray"].update(storage_path=storage_path, cpus_per_worker=1)
    (project / "params.yaml").write_text(yaml.safe_dump(data))
    assert stage(project, "params").returncode == 0  # resolved/: what each stage reads


def one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), result.stderr


def test_stages_read_published_shards_and_stop_on_bad_urls(tmp_path, bucket, s3_server):
    project = tmp_path
    url = f"s3://{bucket}/digits"

    write_params(project, "s3://no-such-bucket/digits")
    for module in ("shard", "publish"):
        one_error_line(stage(project, module, "digits"), "datasets.digits.publish.url",
                       "bucket 'no-such-bucket' does not exist")
    assert not (project / "data").exists()

    write_params(project, url, storage_path="s3://no-such-bucket/checkpoints")
    assert stage(project, "shard", "digits").returncode == 0
    local = project / "data" / "shards" / "digits"
    assert [path.name for path in local.iterdir()] == ["manifest.json"]  # no local copy
    assert stage(project, "publish", "digits").returncode == 0
    record = json.loads((project / "data" / "published" / "digits.json").read_text())
    assert record["url"] == url and "train-000000.tar" in record["files"]
    listed = s3_server.list_objects_v2(Bucket=bucket, Prefix="digits/")["Contents"]
    assert {item["Key"] for item in listed} == {
        f"digits/{name}" for name in [*record["files"], "manifest.json"]}
    params = load_params(project / "params.yaml")
    with pytest.raises(UserError, match=r"^params.yaml: ray.storage_path: s3://no-such-bucket/"
                                        "checkpoints: bucket 'no-such-bucket' does not exist$"):
        pretrain("tiny", params.pretraining("tiny"), url, params.ray)  # raised before Ray starts

    encoder = untrained_encoder(params.pretraining("random"), url)  # the manifest, by URL
    encoder_path(project, "random", 0).parent.mkdir(parents=True)
    save_encoder(encoder, encoder_path(project, "random", 0))
    # no RAY_ADDRESS: the stage starts its own local Ray, whose workers see the S3 server
    # (the session's cluster may have started before it)
    done = stage(project, "features", "random")
    assert done.returncode == 0, done.stderr
    features = project / features_path("random", 0, "digits", "train")
    before = {p.name: p.read_bytes() for p in features.iterdir()}

    with FaultProxy(os.environ["AWS_ENDPOINT_URL_S3"], ("503",)) as outage:
        one_error_line(stage(project, "features", "random", AWS_ENDPOINT_URL_S3=outage.url),
                       f"{url}/manifest.json: unreachable after 2 attempts", "503")
    assert {p.name: p.read_bytes() for p in features.iterdir()} == before

    key = "digits/test-000000.tar"
    shard = bytearray(s3_server.get_object(Bucket=bucket, Key=key)["Body"].read())
    shard[1500] ^= 0xFF
    s3_server.put_object(Bucket=bucket, Key=key, Body=bytes(shard))
    one_error_line(stage(project, "features", "random"),
                   f"{url}/test-000000.tar: sha256 differs from the manifest")
    assert {p.name: p.read_bytes() for p in features.iterdir()} == before


def test_shards_the_tasks_cannot_write_are_one_line_naming_the_key(tmp_path, ray_env):
    """A `publish.url` that the store refuses while shard@'s Ray tasks upload (here a
    directory under a regular file: no bucket check catches it before they run) ends the
    stage with one line naming the key and the shard's URL; nothing is left locally."""
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "a-file").write_text("not a directory")
    url = (tmp_path / "a-file" / "digits").as_uri()
    write_params(project, url)
    one_error_line(stage(project, "shard", "digits", **ray_env),
                   "datasets.digits.publish.url", f"{url}/train-000000.tar", "cannot be written")
    assert not list((project / "data" / "shards").iterdir())

"""Reads through a fault-injecting proxy (benchmarks/fault_proxy.py) on 127.0.0.1, in front
of a real S3-compatible server (moto) and of `python -m http.server`: 503s, reset
connections and stalls on a fixed schedule are retried and counted, and change nothing
that is read; an outage that does not end is one line naming the URL."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from benchmarks.fault_proxy import FaultProxy
from pipeline.data.loader import StreamLoader, StreamSpec
from pipeline.data.publish import publish_shards
from pipeline.data.reader import read_split, split_shards
from pipeline.data.storage import (
    ReadPolicy,
    configure_reads,
    forget_clients,
    read_bytes,
    read_retries,
)
from pipeline.errors import UserError
from pipeline.nets.extract import split_features
from pipeline.params.ray import RayConfig
from pipeline.params.training import RunConfig
from pipeline.train.launcher import pretrain, untrained_encoder

FAULTS = ("503", "ok", "reset", "ok", "stall", "ok")  # per request method and path
FAST = ReadPolicy(attempts=4, backoff_s=0.01, backoff_max_s=0.05, timeout_s=1.0)


@pytest.fixture
def fast_reads():
    configure_reads(FAST)
    yield
    configure_reads(ReadPolicy())


@pytest.fixture
def s3_through(s3_server, monkeypatch):
    """`through(schedule)`: a proxy in front of the S3 server, which S3 URLs then reach."""
    def through(schedule: tuple[str, ...]) -> FaultProxy:
        proxy = FaultProxy(os.environ["AWS_ENDPOINT_URL_S3"], schedule, stall_s=2.5)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        forget_clients()  # clients made after this reach the proxy
        return proxy

    yield through
    forget_clients()


def stream_labels(location: str) -> list[torch.Tensor]:
    shards, total, decoding = split_shards(location, ["train"])
    spec = StreamSpec(tuple(shards), decoding, batch_size=64, shuffle_buffer=100)
    return [labels for _, labels in StreamLoader(spec, num_workers=2).epoch(0, total // 64)]


def test_features_through_faults_equal_fault_free_features(digits_shards, bucket, s3_through,
                                                           fast_reads):
    url = f"s3://{bucket}/digits"
    publish_shards(digits_shards, url)
    encoder = untrained_encoder(RunConfig.model_validate({
        "dataset": "digits", "backbone": {"name": "small_cnn", "width": 4},
        "method": {"name": "simclr"}}), digits_shards)
    expected = {split: split_features(encoder, url, split) for split in ("train", "test")}
    stream_expected = stream_labels(url)

    before = read_retries()
    with s3_through(FAULTS) as proxy:
        for split, (features, labels) in expected.items():
            got_features, got_labels = split_features(encoder, url, split)
            assert torch.equal(got_features, features) and torch.equal(got_labels, labels)
        assert set(proxy.faults) == {"503", "reset", "stall"}
        assert read_retries() - before == proxy.injected  # every fault retried, counted
        before, injected = read_retries(), proxy.injected
        # two loader processes, forked: their retries reach this process's counter
        streamed = stream_labels(url)
        retried = read_retries() - before
    assert all(torch.equal(a, b) for a, b in zip(streamed, stream_expected, strict=True))
    # (the loader processes prefetch past the last batch: the proxy may see more faults)
    assert 0 < retried <= proxy.injected - injected


def test_a_shard_read_costs_the_requests_docs_data_md_counts(s3_server, bucket, s3_through,
                                                            http_server):
    """Over S3 (pyarrow): one HEAD and one ranged GET per 8 MiB read; over HTTP (fsspec):
    one GET. docs/data.md derives ImageNet's requests per epoch from these."""
    payload = os.urandom(17 << 20)  # 3 reads of 8 MiB
    digest = hashlib.sha256(payload).hexdigest()
    s3_server.put_object(Bucket=bucket, Key="shard.tar", Body=payload)
    with s3_through(("ok",)) as proxy:
        assert read_bytes(f"s3://{bucket}/shard.tar", digest) == payload
    assert proxy.summary()["requests"] == {"HEAD": 1, "GET": 3}
    root, base = http_server
    (root / "shard.tar").write_bytes(payload)
    with FaultProxy(base) as proxy:
        assert read_bytes(f"{proxy.url}/shard.tar", digest) == payload
    assert proxy.summary()["requests"] == {"GET": 1}


def test_an_outage_is_one_line_naming_the_url(digits_shards, bucket, s3_through, fast_reads):
    url = f"s3://{bucket}/digits"
    publish_shards(digits_shards, url)
    with s3_through(("503",)), pytest.raises(
            UserError, match=rf"^{url}/manifest\.json: unreachable after 4 attempts \(.*503"):
        read_split(url, "test")


def test_streamed_pretrain_through_faults_reports_its_retries(ray_cluster, digits_shards,
                                                              http_server, tmp_path,
                                                              fast_reads):
    root, base = http_server
    publish_shards(digits_shards, str(root / "faulty"))
    run = RunConfig.model_validate({
        "dataset": "digits", "seed": 1, "backbone": {"name": "small_cnn", "width": 4},
        "method": {"name": "simclr"}, "data": {"loader": "stream", "shuffle_buffer": 100},
        "train": {"epochs": 1, "batch_size": 64, "monitor": {"every_epochs": 0}}})
    with FaultProxy(base, ("503", "ok", "reset", "ok")) as proxy:
        driver_before = read_retries()
        result = pretrain("faulty", run, f"{proxy.url}/faulty",
                          RayConfig(storage_path=str(tmp_path)))
        driver = read_retries() - driver_before  # the manifest checks, here
    reported = result.history[-1]["read_retries"]  # every rank's, the run so far
    # the workers' loader processes may prefetch past the last step, uncounted so far
    assert 0 < reported <= proxy.injected - driver


def test_a_checkpoint_resumes_through_faults_and_an_outage_is_one_line(
        s3_server, bucket, s3_through, fast_reads, tmp_path):
    """Resume reads the checkpoint with the shard reader's retries: 503s and resets are
    retried and counted; a store that stays down is one line naming the file's URL."""
    from ray.train import Checkpoint

    from pipeline.methods import build_method
    from pipeline.nets.backbones import Encoder
    from pipeline.params.methods import SimCLRMethod, SmallCNNBackbone
    from pipeline.train.checkpoint import STATE_FILE, Progress, load_state, save_state

    def method():
        encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])
        return build_method(SimCLRMethod(name="simclr"), encoder, 10, None)

    trained = method()
    save_state(tmp_path, trained, torch.optim.SGD(trained.parameters(), lr=0.1),
               Progress(1, 3, [{"epoch": 1, "loss": 1.0}]))
    for file in tmp_path.iterdir():
        s3_server.upload_file(str(file), bucket, f"run/epoch_1/{file.name}")
    checkpoint = Checkpoint(f"s3://{bucket}/run/epoch_1")
    before = read_retries()
    with s3_through(("503", "ok", "reset", "ok")) as proxy:
        progress, _ = load_state(checkpoint, method())
    assert progress.step == 3 and proxy.injected > 0
    assert read_retries() - before == proxy.injected
    with s3_through(("503",)), pytest.raises(UserError, match=(
            rf"^s3://{bucket}/run/epoch_1/{STATE_FILE}: unreachable after 4 attempts \(.*503")):
        load_state(checkpoint, method())

"""Shards published to a real S3-compatible server (moto, on 127.0.0.1) and to a plain
`python -m http.server`, read back by URL by both loaders; tampering and wrong URLs; an
image folder read from a prefix of the S3 server."""

from __future__ import annotations

import shutil

import pytest
import torch

from pipeline.data.loader import StreamLoader, StreamSpec
from pipeline.data.publish import check_published, publish_shards
from pipeline.data.reader import read_split, split_shards
from pipeline.data.shards import write_shards
from pipeline.data.sources import load_source, make_splits
from pipeline.data.storage import (
    ReadPolicy,
    UploadError,
    check_bucket,
    configure_reads,
    read_bytes,
)
from pipeline.errors import UserError
from pipeline.params.data import ImageFolderSource, SplitConfig

KEY = "datasets.digits.publish.url"  # a ParamsError: named in the params file
NAMED = f"params.yaml: {KEY}"


def stream_epoch(location: str, workers: int = 2) -> list[torch.Tensor]:
    shards, total, decoding = split_shards(location, ["train"])
    spec = StreamSpec(tuple(shards), decoding, batch_size=64, shuffle_buffer=100)
    return [labels for _, labels in StreamLoader(spec, workers).epoch(0, total // 64)]


def assert_same_split(a, b) -> None:
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_published_shards_read_back_from_s3_by_both_loaders(digits_shards, bucket):
    url = f"s3://{bucket}/shards/digits"
    record = publish_shards(digits_shards, url)
    assert record["url"] == url
    assert set(record["files"]) == {path.name for path in digits_shards.glob("*.tar")}
    check_published(digits_shards, url, KEY)
    for split in ("train", "test"):
        assert_same_split(read_split(url, split), read_split(digits_shards, split))
    shards, _, _ = split_shards(url, ["train"])
    assert all(shard.url.startswith(f"{url}/train-") for shard in shards)
    # two loader processes (forked after this process used S3) stream the same batches
    remote, local = stream_epoch(url), stream_epoch(str(digits_shards))
    assert len(remote) == len(local) > 0
    assert all(torch.equal(a, b) for a, b in zip(remote, local, strict=True))


def test_http_urls_read_the_same_shards(digits_shards, http_server):
    root, base = http_server
    publish_shards(digits_shards, str(root / "digits"))  # a local directory, served by http
    check_published(digits_shards, f"{base}/digits", KEY)
    assert_same_split(read_split(f"{base}/digits", "test"), read_split(digits_shards, "test"))


def test_tampered_shard_and_republished_manifest_are_named(digits_shards, bucket, s3_server):
    url = f"s3://{bucket}/digits"
    publish_shards(digits_shards, url)
    shard = bytearray((digits_shards / "train-000001.tar").read_bytes())
    shard[2000] ^= 0xFF  # one byte of one image
    s3_server.put_object(Bucket=bucket, Key="digits/train-000001.tar", Body=bytes(shard))
    with pytest.raises(UserError, match=rf"^{url}/train-000001\.tar: sha256 differs from the "
                                        r"manifest \(corrupt or modified\)$"):
        read_split(url, "train")
    with pytest.raises(UserError, match=rf"^{url}/train-000001\.tar: corrupt shard \(sha256 "
                                        r"differs from the manifest\); set data.on_corrupt"):
        stream_epoch(url, workers=0)
    s3_server.put_object(Bucket=bucket, Key="digits/manifest.json", Body=b'{"splits": {}}\n')
    with pytest.raises(UserError, match=rf"^{NAMED}: {url}/manifest\.json differs from .*"
                                        "changed since they were published"):
        check_published(digits_shards, url, KEY)


def test_missing_bucket_missing_objects_and_wrong_urls_are_one_line(digits_shards, bucket,
                                                                     http_server, tmp_path):
    with pytest.raises(UploadError, match=r"^s3://no-such-bucket/d/test-000000\.tar: bucket "
                                          r"'no-such-bucket' does not exist$"):
        publish_shards(digits_shards, "s3://no-such-bucket/d")
    with pytest.raises(UserError, match=rf"^{NAMED}: s3://no-such-bucket/d: bucket "
                                        "'no-such-bucket' does not exist$"):
        check_bucket("s3://no-such-bucket/d", KEY)
    check_bucket(f"s3://{bucket}/anything", KEY)
    with pytest.raises(UserError, match=rf"^{NAMED}: s3://{bucket}/nothing/manifest\.json: not "
                                        "found; publish the shards first$"):
        check_published(digits_shards, f"s3://{bucket}/nothing", KEY)
    _, base = http_server
    with pytest.raises(UserError, match=rf"^{base}/nothing/manifest\.json: HTTP 404 "):
        read_bytes(f"{base}/nothing/manifest.json")
    configure_reads(ReadPolicy(attempts=2, backoff_s=0.01))
    try:
        with pytest.raises(UserError, match=r"^http://127\.0\.0\.1:9/x\.tar: unreachable after "
                                            r"2 attempts \(.*"):
            read_bytes("http://127.0.0.1:9/x.tar")  # the discard port: nothing listens
    finally:
        configure_reads(ReadPolicy())
    copy = tmp_path / "digits"
    shutil.copytree(digits_shards, copy)
    (copy / "test-000000.tar").write_bytes(b"not the shard")
    with pytest.raises(UserError, match=r"test-000000\.tar: sha256 differs from the manifest "
                                        r"\(corrupt or modified\); rerun the shard stage$"):
        publish_shards(copy, f"s3://{bucket}/copy")


@pytest.mark.parametrize("storage", ["raw", "encoded"])
def test_an_image_folder_at_an_s3_prefix_gives_the_local_folders_shards(
        imagefolder_dir, bucket, s3_server, tmp_path, storage):
    for path in sorted(imagefolder_dir.rglob("*")):
        if path.is_file():
            key = f"images/{path.relative_to(imagefolder_dir).as_posix()}"
            s3_server.upload_file(str(path), bucket, key)
    shards = {}
    for name, location in (("local", str(imagefolder_dir)), ("s3", f"s3://{bucket}/images")):
        source = load_source(ImageFolderSource(name="imagefolder", path=location,
                                               storage=storage), 16)
        out = tmp_path / name
        out.mkdir()
        write_shards(make_splits(source, SplitConfig()), source.class_names, out, 5,
                     {"name": "imagefolder"}, decoding=source.decoding, storage=source.storage)
        shards[name] = {path.name: path.read_bytes() for path in out.glob("*.tar")}
    assert shards["s3"] == shards["local"] and len(shards["local"]) == 4
    with pytest.raises(UserError, match=rf"^s3://{bucket}/nothing: image folder directory "
                                        "not found$"):
        load_source(ImageFolderSource(name="imagefolder", path=f"s3://{bucket}/nothing"), 16)

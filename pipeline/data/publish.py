"""Published shards: the record of what a URL holds, and checking it before reading.

With `datasets.<name>.publish.url`, the shard stage writes the shards straight to the URL,
manifest last (pipeline.data.shards.write_shards), and keeps only the manifest in
data/shards/<name>, DVC's output: that small file is the reference. Readers accept a URL
only while its manifest is the local one; each shard's sha256 is then checked as it is
read, before any of its samples is used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.data.storage import (
    MANIFEST,
    ReadPolicy,
    child,
    configure_reads,
    read_bytes,
    upload,
)
from pipeline.errors import UserError
from pipeline.layout import shard_dir
from pipeline.params.base import ParamsError
from pipeline.params.data import PublishConfig


def _local_manifest(shard_dir: Path) -> tuple[bytes, dict[str, Any]]:
    path = shard_dir / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: shard manifest not found; run the shard stage first")
    data = path.read_bytes()
    return data, json.loads(data)


def shard_files(manifest: dict[str, Any]) -> dict[str, str]:
    """File name -> sha256 of every shard the manifest lists."""
    return {record["file"]: record["sha256"]
            for split in manifest["splits"].values() for record in split["shards"]}


def publish_shards(shard_dir: Path, url: str) -> dict[str, Any]:
    """Copy a local shard directory's shards, then its manifest, to `url`; return the
    record of what went where (benchmarks and tests publish existing shards this way).

    A local shard whose bytes differ from the manifest is not published (the copy checks
    each file's sha256 as it uploads it).
    """
    manifest_bytes, manifest = _local_manifest(shard_dir)
    files = shard_files(manifest)
    for name, expected in sorted(files.items()):
        if upload(shard_dir / name, child(url, name)) != expected:
            raise UserError(f"{shard_dir / name}: sha256 differs from the manifest (corrupt or "
                            "modified); rerun the shard stage")
    manifest_sha256 = upload(shard_dir / MANIFEST, child(url, MANIFEST))
    if manifest_sha256 != hashlib.sha256(manifest_bytes).hexdigest():
        raise UserError(f"{shard_dir / MANIFEST}: changed while it was being published")
    return {"url": url, "manifest": manifest_sha256, "files": files}


def check_published(shard_dir: Path, read_url: str, key: str) -> None:
    """Stop, naming the params `key` and the URL, unless the manifest at `read_url` is the
    local one."""
    remote_url = child(read_url, MANIFEST)
    local, _ = _local_manifest(shard_dir)
    try:
        remote = read_bytes(remote_url)
    except UserError as exc:
        raise ParamsError([(key, f"{exc}; publish the shards first")]) from None
    if remote != local:
        raise ParamsError([(key, f"{remote_url} differs from {shard_dir / MANIFEST}: the "
                                 "shards there changed since they were published; publish "
                                 "them again")])


def published_record(shard_dir: Path, url: str, key: str) -> dict[str, Any]:
    """The record of shards the shard stage wrote to `url`, once the manifest there is the
    local one: the URL, the manifest's sha256 and every shard's."""
    check_published(shard_dir, url, key)
    manifest_bytes, manifest = _local_manifest(shard_dir)
    return {"url": url, "manifest": hashlib.sha256(manifest_bytes).hexdigest(),
            "files": shard_files(manifest)}


def shard_location(dataset: str, publish: PublishConfig | None) -> str:
    """Where stages read a dataset's shards: data/shards/<dataset>, or the URL it was
    published to (`datasets.<dataset>.publish`), once the manifest there is the local one.

    Where shards are read from is not a param of the stages that read them: the content is
    the local, DVC-tracked shards either way (the manifest check, then each shard's sha256).
    """
    if publish is None:
        return str(shard_dir(dataset))
    configure_reads(ReadPolicy(**publish.read.model_dump()))
    key = "read_url" if publish.read_url else "url"
    url = publish.read_url or publish.url
    check_published(shard_dir(dataset), url, f"datasets.{dataset}.publish.{key}")
    return url

"""Publishing a dataset's shards to object storage, and checking what a URL holds.

The local shard directory (DVC's output of the shard stage) stays the reference: a
publication copies it byte for byte, manifest last (readers never find a manifest whose
shards are not all there), and readers accept a URL only while its manifest is the local
one; each shard's sha256 is then checked as it is read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.data.storage import MANIFEST, child, read_bytes, upload
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
    """Copy the shards, then the manifest, to `url`; return the record of what went where.

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


def shard_location(dataset: str, publish: PublishConfig | None) -> str:
    """Where stages read a dataset's shards: data/shards/<dataset>, or the URL it was
    published to (`datasets.<dataset>.publish`), once the manifest there is the local one.

    Where shards are read from is not a param of the stages that read them: the content is
    the local, DVC-tracked shards either way (the manifest check, then each shard's sha256).
    """
    if publish is None:
        return str(shard_dir(dataset))
    key = "read_url" if publish.read_url else "url"
    url = publish.read_url or publish.url
    check_published(shard_dir(dataset), url, f"datasets.{dataset}.publish.{key}")
    return url

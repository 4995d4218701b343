"""Reading tar shards fast: a direct parser for the plain USTAR files this pipeline writes,
with webdataset's reader as the fallback for any other tar. Shards are read whole, from a
local path or a URL (pipeline.data.storage, which retries transient failures and checks
the sha256 before any sample is parsed)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from webdataset.tariterators import group_by_keys, tar_file_expander

from pipeline.data.storage import read_bytes

_BLOCK = 512


class _NotPlainUstar(Exception):
    """The tar uses features (pax or GNU long names, links) the fast path does not parse."""


def plain_tar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(name, payload) of each member of an uncompressed tar of regular files.

    Python's tarfile spends ~50x longer per member than reading the bytes; shards written
    by this pipeline are plain USTAR, so their headers are parsed here directly (the
    caller checks the shard's sha256, which covers every header). Anything else raises
    _NotPlainUstar, and the caller falls back to webdataset's reader.
    """
    view = memoryview(data)
    offset, end = 0, len(data)
    while offset + _BLOCK <= end:
        if data[offset] == 0 and data.count(0, offset, offset + _BLOCK) == _BLOCK:
            return  # end-of-archive marker
        if data[offset + 156] not in (0x30, 0) or data[offset + 345] != 0:
            raise _NotPlainUstar  # links, pax/GNU headers, or a name prefix
        name = data[offset:offset + 100].split(b"\0", 1)[0].decode()
        size = int(data[offset + 124:offset + 136].rstrip(b"\0 ") or b"0", 8)
        start = offset + _BLOCK
        if start + size > end:
            raise ValueError(f"member {name} runs past the end of the file (truncated)")
        yield name, bytes(view[start:start + size])
        offset = start + (size + _BLOCK - 1) // _BLOCK * _BLOCK
    raise ValueError("no end-of-archive marker (truncated)")


def _plain_samples(data: bytes) -> Iterator[dict[str, Any]]:
    """Group consecutive members `<key>.<suffix>` into webdataset samples."""
    sample: dict[str, Any] = {}
    for name, payload in plain_tar_members(data):
        key, _, suffix = name.partition(".")
        if sample and key != sample["__key__"]:
            yield sample
            sample = {}
        sample.setdefault("__key__", key)
        sample[suffix.lower()] = payload
    if sample:
        yield sample


def shard_samples(url: str, sha256: str = "") -> Iterator[dict[str, Any]]:
    """The webdataset samples (`__key__` and one entry per member suffix) of one shard (a
    path or URL), after checking its sha256 when given."""
    return tar_samples(read_bytes(url, sha256), url)


def tar_samples(data: bytes, url: str) -> Iterator[dict[str, Any]]:
    """The webdataset samples of a shard's bytes (`url` names it in webdataset's reader)."""
    try:
        yield from _plain_samples(data)
    except _NotPlainUstar:  # any other tar: webdataset's own (slower) reader
        stream = io.BytesIO(data)
        yield from group_by_keys(tar_file_expander([{"url": url, "stream": stream}]))

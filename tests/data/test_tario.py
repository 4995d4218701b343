"""The fast USTAR reader agrees with tarfile, catches truncation, and falls back."""

from __future__ import annotations

import io
import tarfile

import pytest

from pipeline.data.tario import plain_tar_members, shard_samples


def test_fast_tar_reader_agrees_with_tarfile_and_catches_truncation(numbered_shards):
    shard = numbered_shards / "train-000000.tar"
    with tarfile.open(shard) as tar:
        expected = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    data = shard.read_bytes()
    assert list(plain_tar_members(data)) == expected
    with pytest.raises(ValueError, match="no end-of-archive marker"):
        list(plain_tar_members(data[:512 * 8]))
    with pytest.raises(ValueError, match="runs past the end"):
        list(plain_tar_members(data[:600]))  # inside the first payload


def test_other_tars_fall_back_to_webdataset(tmp_path):
    path = tmp_path / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for key in ("a" * 120, "b"):  # a long name needs a pax header
            for suffix, payload in (("cls", b"3"), ("txt", key.encode())):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    samples = list(shard_samples(str(path)))
    assert [s["__key__"] for s in samples] == ["a" * 120, "b"]
    assert samples[1]["cls"] == b"3"

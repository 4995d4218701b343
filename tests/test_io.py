"""pipeline.io.load_torch_file: every unreadable file is one line, whatever its bytes."""

import random

import pytest
import torch

from pipeline.errors import UserError
from pipeline.io import load_torch_file

NOT_TORCH = "not a PyTorch file (corrupt, or written by another program)"


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_are_not_a_pytorch_file(tmp_path, seed):
    """Random bytes make torch's legacy unpickler fail with varied exception types."""
    data = random.Random(seed).randbytes(4096)
    if data.startswith((b"PK", b"\x80")):
        data = b"\x00" + data
    path = tmp_path / "encoder.pt"
    path.write_bytes(data)
    with pytest.raises(UserError) as caught:
        load_torch_file(path)
    assert str(caught.value) == f"{path}: {NOT_TORCH}"


def test_a_truncated_torch_file_is_named_as_such(tmp_path):
    path = tmp_path / "encoder.pt"
    torch.save({"weight": torch.ones(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError) as caught:
        load_torch_file(path)
    assert str(caught.value) == (
        f"{path}: corrupt or truncated PyTorch file (unreadable zip archive)")


def test_an_empty_file_and_a_missing_file(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty or truncated file"):
        load_torch_file(empty)
    with pytest.raises(UserError, match="train it first"):
        load_torch_file(tmp_path / "absent.pt", missing="train it first")

"""Streamed batches are pinned for GPU copies: DataLoader's pin thread reaches `Batch`."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data._utils.pin_memory import pin_memory as dataloader_pin

from pipeline.data.batches import pins_memory
from pipeline.data.loader import Batch

HAS_ACCELERATOR = torch.cuda.is_available()


@pytest.fixture
def pinned(monkeypatch):
    """Without a GPU, page-locking is impossible: record which tensors get pinned."""
    if HAS_ACCELERATOR:
        return None
    calls: list[torch.Tensor] = []

    def fake_pin(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        calls.append(tensor)
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    return calls


def test_dataloader_pinning_pins_both_tensors_of_a_batch(pinned):
    batch = Batch(torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8), torch.arange(4), 2)
    out = dataloader_pin(batch)  # what DataLoader(pin_memory=True)'s thread calls
    assert isinstance(out, Batch) and out.skipped == 2
    assert torch.equal(out.images, batch.images) and torch.equal(out.labels, batch.labels)
    if HAS_ACCELERATOR:
        assert out.images.is_pinned() and out.labels.is_pinned()
    else:
        assert [t.data_ptr() for t in pinned] == [batch.images.data_ptr(),
                                                  batch.labels.data_ptr()]


def test_streams_pin_for_a_gpu_only():
    assert pins_memory(torch.device("cuda", 0))
    assert not pins_memory(torch.device("cpu"))

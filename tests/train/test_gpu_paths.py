"""GPU-path decisions that can be checked on CPU: precision, SyncBatchNorm scope."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter
from torch import nn

from pipeline.errors import UserError
from pipeline.methods import build_method
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import DSARegulator, Method, SmallCNNBackbone
from pipeline.precision import UnsupportedPrecision, bf16_enabled, check_precision
from pipeline.train.loop import sync_trainable_batch_norm

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA device whose native bf16 support the test sets (no GPU on CI)."""
    native = {"value": True}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native["value"] or including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    return native


def test_auto_is_fp32_on_cpu_and_bf16_is_honoured_there():
    check_precision("bf16", CPU, "runs.r.train.precision")
    assert not bf16_enabled("auto", CPU)
    assert not bf16_enabled("fp32", CPU)
    assert bf16_enabled("bf16", CPU)


def test_auto_follows_native_bf16_on_a_gpu(gpu):
    check_precision("bf16", CUDA, "runs.r.train.precision")
    assert bf16_enabled("auto", CUDA) and bf16_enabled("bf16", CUDA)
    gpu["value"] = False  # emulated only (V100, T4)
    assert not bf16_enabled("auto", CUDA)
    assert not bf16_enabled("fp32", CUDA)


def test_bf16_on_an_emulating_gpu_is_one_line_naming_the_key(gpu):
    gpu["value"] = False
    with pytest.raises(UnsupportedPrecision) as error:
        check_precision("bf16", CUDA, "runs.simclr_dsa.train.precision")
    message = str(error.value)
    assert message.startswith("params.yaml: runs.simclr_dsa.train.precision: bf16")
    assert "\n" not in message
    assert isinstance(error.value, UserError)  # the launcher re-raises a worker's UserError


def _method(name: str, regulator: DSARegulator | None):
    cfg = TypeAdapter(Method).validate_python(
        {"name": name, "projector": {"hidden_dim": 32, "output_dim": 16}})
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])
    return build_method(cfg, encoder, 10, regulator)


def _sync_layers(module: nn.Module | None) -> tuple[int, int]:
    """(SyncBatchNorm layers, other BN layers) in `module`."""
    layers = list(module.modules()) if module is not None else []
    synced = sum(isinstance(m, nn.SyncBatchNorm) for m in layers)
    plain = sum(isinstance(m, nn.modules.batchnorm._BatchNorm)
                and not isinstance(m, nn.SyncBatchNorm) for m in layers)
    return synced, plain


@pytest.mark.parametrize("name", ["simclr", "byol", "triplet"])
def test_sync_batch_norm_covers_the_online_networks_only(name):
    method = sync_trainable_batch_norm(_method(name, DSARegulator(name="dsa", k=5)))
    synced, plain = _sync_layers(method.encoder)
    assert synced > 0 and plain == 0
    assert _sync_layers(method.projector)[0] > 0
    frozen = [method.target_encoder, getattr(method, "target_projector", None),
              method.regulator.prior.network]
    assert [_sync_layers(m)[0] for m in frozen] == [0, 0, 0]
    assert any(_sync_layers(m)[1] for m in frozen)  # their BN layers stay per-GPU

"""DSA's prior networks (precision, frozen weights, local files) and prior-file records."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import TypeAdapter

from pipeline.errors import UserError
from pipeline.io import sha256_file, write_json
from pipeline.methods import build_method
from pipeline.methods.dsa import DSA
from pipeline.methods.priors import (
    check_prior,
    with_absolute_prior_path,
)
from pipeline.nets.backbones import Encoder, save_encoder
from pipeline.params.methods import DSARegulator, Method, SmallCNNBackbone
from pipeline.params.training import RunConfig
from pipeline.precision import bf16_enabled
from pipeline.prior_record import stale_priors


def _method(name: str, regulator: DSARegulator):
    cfg = TypeAdapter(Method).validate_python(
        {"name": name, "projector": {"hidden_dim": 32, "output_dim": 16}})
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])
    return build_method(cfg, encoder, 10, regulator)


def _prior_pass(method, precision: str, autocast: bool) -> tuple[torch.Tensor | None, ...]:
    method.regulator.prior.precision = precision
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return method.regulator.prior_features(method, x, x.flip(-1), x)


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_fp32_prior_stays_fp32_under_bf16_autocast(name):
    """Including BYOL's views, whose target features the step computes under autocast:
    with `fp32` asked for, the prior pass computes them itself, in fp32."""
    torch.manual_seed(0)
    method = _method(name, DSARegulator(name="dsa", prior_precision="fp32"))
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    network = method.target if name == "byol" else method.regulator.prior.network
    with torch.no_grad():
        exact = network(torch.cat([x, x.flip(-1), x])).chunk(3)
    under_autocast = _prior_pass(method, "fp32", autocast=True)
    assert all(torch.equal(a, b) for a, b in zip(under_autocast, exact, strict=True))
    if name == "byol":  # without autocast the step's own fp32 target features serve
        views1, views2, original = _prior_pass(method, "fp32", autocast=False)
        assert views1 is None and views2 is None
        with torch.no_grad():
            assert torch.equal(original, network(x))


def test_bf16_prior_returns_fp32_features_close_to_exact():
    """bf16 only feeds exp(-d / tau_p) and kNN ranks; the features come back as fp32."""
    torch.manual_seed(0)
    method = _method("simclr", DSARegulator(name="dsa"))
    exact = _prior_pass(method, "fp32", autocast=False)
    for low, high in zip(_prior_pass(method, "bf16", autocast=False), exact, strict=True):
        assert low.dtype == torch.float32 and not torch.equal(low, high)
        torch.testing.assert_close(low, high, rtol=0.05, atol=0.05)


def test_auto_precision_is_fp32_on_cpu():
    assert not bf16_enabled("auto", torch.device("cpu"))
    assert bf16_enabled("bf16", torch.device("cpu"))
    assert not bf16_enabled("fp32", torch.device("cuda"))


def _run(regulator: dict) -> RunConfig:
    return RunConfig.model_validate({
        "dataset": "digits", "backbone": {"name": "small_cnn", "width": 4},
        "method": {"name": "simclr"}, "regulator": {"name": "dsa", **regulator}})


def test_missing_priors_are_user_errors_naming_the_key(tmp_path: Path):
    with pytest.raises(UserError, match=r"runs\.r\.regulator\.prior_path: .*not found"):
        check_prior("r", _run({"prior": "checkpoint", "prior_path": str(tmp_path / "x.pt")}))
    with pytest.raises(UserError, match=r"runs\.r\.regulator\.prior_path: torchvision"):
        check_prior("r", _run({"prior": "torchvision",
                               "prior_path": str(tmp_path / "resnet18.pth")}))


def test_checkpoint_prior_is_a_frozen_encoder(tmp_path: Path):
    torch.manual_seed(0)
    path = tmp_path / "encoder.pt"
    save_encoder(Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25]), path)
    run = _run({"prior": "checkpoint", "prior_path": str(path)})
    check_prior("r", run)
    method = _method("simclr", run.regulator)
    assert isinstance(method.regulator, DSA)
    network = method.regulator.prior.network
    assert not any(p.requires_grad for p in network.parameters())
    x = torch.rand(24, 1, 8, 8)
    method(x, x, torch.zeros(24, dtype=torch.long), x)["loss"].backward()
    assert not network.training
    before = [p.clone() for p in network.parameters()]
    method.after_optimizer_step(1, 10)  # a fixed network: no EMA
    assert all(torch.equal(a, b) for a, b in zip(before, network.parameters(), strict=True))


def test_torchvision_prior_reads_local_weights(tmp_path: Path):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    run = _run({"prior": "torchvision", "prior_path": str(weights)})
    check_prior("r", run)
    method = _method("simclr", run.regulator)
    x = torch.rand(24, 1, 8, 8)  # grey 8x8: repeated to RGB, upsampled to 32 px
    outputs = method(x, x.flip(-1), torch.zeros(24, dtype=torch.long), x)
    assert torch.isfinite(outputs["loss"])
    assert not any(p.requires_grad for p in method.regulator.prior.network.parameters())


def test_ray_workers_get_the_prior_path_made_absolute(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative prior_path is relative to the stage's directory
    run = _run({"prior": "checkpoint", "prior_path": "models/simclr/encoder.pt"})
    absolute = with_absolute_prior_path(run)
    assert absolute.regulator.prior_path == str(tmp_path / "models/simclr/encoder.pt")
    assert absolute.model_copy(update={"regulator": run.regulator}) == run
    assert with_absolute_prior_path(_run({"prior": "ema"})) == _run({"prior": "ema"})


def test_runs_whose_prior_file_changed_are_stale(tmp_path: Path):
    prior = tmp_path / "models" / "simclr" / "encoder.pt"
    prior.parent.mkdir(parents=True)
    prior.write_bytes(b"first encoder")
    record = tmp_path / "models" / "simclr_dsa" / "prior.json"
    write_json(record, {"path": str(prior), "sha256": sha256_file(prior)})
    records = {"simclr": tmp_path / "models" / "simclr" / "prior.json", "simclr_dsa": record}
    assert stale_priors(records) == []
    prior.write_bytes(b"retrained encoder")
    assert stale_priors(records) == [
        f"runs.simclr_dsa: its DSA prior {prior} has changed since it was trained; "
        "rerun `dvc repro -f pretrain@simclr_dsa`"]
    prior.unlink()
    assert "is gone" in stale_priors(records)[0]
    record.write_text("[]")
    with pytest.raises(UserError, match=r"simclr_dsa/prior.json: not a prior record"):
        stale_priors(records)

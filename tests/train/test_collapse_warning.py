"""The per-epoch collapse check: the floors, the warning line, and one real epoch (no Ray)
whose encoder is collapsed by construction."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.data.batches import MemoryBatches
from pipeline.data.shards import read_manifest
from pipeline.methods import build_method
from pipeline.optim import build_optimizer
from pipeline.params.training import MonitorConfig, RunConfig
from pipeline.spectrum import rankme, std_of_l2_normalized
from pipeline.train.checkpoint import Progress
from pipeline.train.loop import make_encoder, train_one_epoch
from pipeline.train.monitor import check_collapse, collapse_warning

DIM = 64


def test_spread_features_pass_and_collapsed_ones_cross_both_floors():
    cfg = MonitorConfig()
    spread = torch.randn(128, DIM, generator=torch.Generator().manual_seed(0))
    stats, reasons = check_collapse(spread, cfg)
    assert reasons == []
    assert stats == {"batch_rankme": rankme(spread),
                     "batch_feature_std": std_of_l2_normalized(spread)}
    collapsed = spread[:1].repeat(128, 1) + 1e-6 * spread  # all rows (almost) one point
    stats, reasons = check_collapse(collapsed, cfg)
    assert len(reasons) == 2
    assert reasons[0].startswith("feature std") and "0.05/sqrt(64)" in reasons[0]
    assert reasons[1].startswith("RankMe") and "0.05 x min(128, 64)" in reasons[1]
    line = collapse_warning("byol", 7, reasons)
    assert line.startswith("warning: [byol] epoch 7: embeddings collapsing: feature std")
    assert "\n" not in line


def test_each_floor_is_its_own_criterion_and_zero_turns_it_off():
    """Spread on a 2-D plane of 64 dims: std stays healthy-ish, RankMe is ~2 < 0.05 * 64."""
    plane = torch.randn(128, 2, generator=torch.Generator().manual_seed(1))
    features = torch.cat([plane, torch.zeros(128, DIM - 2)], dim=1)
    _, reasons = check_collapse(features, MonitorConfig(collapse_std_fraction=0.0))
    assert [r.split()[0] for r in reasons] == ["RankMe"]
    _, reasons = check_collapse(features, MonitorConfig(collapse_std_fraction=0.0,
                                                        collapse_rank_fraction=0.0))
    assert reasons == []


def test_rank_floor_scales_with_the_batch_when_it_is_smaller_than_the_dimension():
    """RankMe of N < D rows is at most N: the floor is a fraction of min(N, D)."""
    features = torch.randn(16, 512, generator=torch.Generator().manual_seed(2))
    stats, reasons = check_collapse(features, MonitorConfig(collapse_rank_fraction=0.5))
    assert stats["batch_rankme"] > 8 and reasons == []


def test_non_finite_features_warn_nothing():
    stats, reasons = check_collapse(torch.full((8, 4), math.nan), MonitorConfig())
    assert math.isnan(stats["batch_rankme"]) and reasons == []


def one_epoch(digits_shards, collapse: bool) -> dict[str, float]:
    """One real epoch of SimCLR on digits. `collapse` makes the encoder's last BatchNorm
    output a constant (weight 0, bias 1), so every image has the same features; lr 0 keeps
    it that way."""
    run = RunConfig.model_validate({
        "dataset": "digits", "seed": 0, "backbone": {"name": "small_cnn", "width": 4},
        "method": {"name": "simclr", "projector": {"hidden_dim": 16, "output_dim": 8}},
        "train": {"epochs": 1, "batch_size": 256}})
    device = torch.device("cpu")
    batches = MemoryBatches(run, digits_shards, rank=0, world=1, device=device)
    torch.manual_seed(0)
    method = build_method(run.method, make_encoder(run, read_manifest(digits_shards)), 7)
    if collapse:
        last_norm = [m for m in method.encoder.modules()
                     if isinstance(m, torch.nn.BatchNorm2d)][-1]
        last_norm.weight.data.zero_()
        last_norm.bias.data.fill_(1.0)
    optimizer = build_optimizer(method, run.train.optimizer)
    rates = [0.0 if collapse else 1e-3] * batches.steps_per_epoch
    return train_one_epoch(method, method, optimizer, batches, run, 1, Progress(), rates,
                           device, rank=0, label="tiny")


@pytest.mark.parametrize("collapse", [False, True])
def test_an_epoch_of_collapsed_embeddings_prints_the_warning_and_continues(
        digits_shards, capsys, collapse: bool):
    row = one_epoch(digits_shards, collapse)
    printed = capsys.readouterr().out
    assert math.isfinite(row["loss"])  # the epoch ran to its end either way
    if collapse:
        assert row["batch_feature_std"] == pytest.approx(0, abs=1e-6)
        assert row["batch_rankme"] == pytest.approx(1, abs=1e-3)
        assert printed.startswith("warning: [tiny] epoch 1: embeddings collapsing: ")
        assert printed.count("\n") == 1
    else:
        assert row["batch_feature_std"] > 0.05 / math.sqrt(16)
        assert row["batch_rankme"] > 0.05 * 16
        assert "warning" not in printed

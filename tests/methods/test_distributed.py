"""W = 2 gloo processes train exactly like 1 process with the concatenated batch.

BatchNorm makes per-process statistics differ, so the comparison is on the losses: each is
fed fixed embeddings (leaf tensors requiring grad) through BN-free heads, which is where
cross-batch gathering happens. With DDP averaging parameter gradients over ranks, rank r's
embedding gradient divided by W must equal the single process's gradient of its rows, and
the mean over ranks of a head's parameter gradient must equal the single process's one.
MoCo takes two steps (the second against the keys the first enqueued), and every rank's
queue must equal the single process's afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pipeline.losses import (
    BarlowTwinsLoss,
    BYOLLoss,
    DSALoss,
    MoCoLoss,
    NTXentLoss,
    TruncatedTripletLoss,
    VICRegLoss,
)

WORLD, LOCAL, DIM = 2, 8, 16
BASES = ["simclr", "byol", "triplet", "barlow_twins", "vicreg", "moco"]
CASES = [*BASES, *(f"{base}+dsa" for base in BASES),
         "simclr+row_l1"]  # the official-compatible relation normalisation


def _inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    n = WORLD * LOCAL
    return {name: torch.randn(n, DIM, generator=generator, dtype=torch.float64)
            for name in ("z1", "z2", "t1", "t2", "e1", "e2", "e0")}


def _modules(case: str) -> tuple[nn.Module, nn.Module, DSALoss]:
    """The base's loss, a BN-free predictor (its output is per-sample) and DSA's loss, the
    same on every rank (one seed, as the training loop seeds them)."""
    torch.manual_seed(1)
    base = case.partition("+")[0]
    criterion = {"simclr": lambda: NTXentLoss(0.5), "byol": BYOLLoss,
                 "triplet": lambda: TruncatedTripletLoss(skip=1, k=3),
                 "barlow_twins": lambda: BarlowTwinsLoss(0.1),
                 "vicreg": VICRegLoss,
                 "moco": lambda: MoCoLoss(DIM, queue_size=2 * WORLD * LOCAL)}[base]()
    predictor = nn.Linear(DIM, DIM).double()
    norm = "row_l1" if case.endswith("row_l1") else "sigmoid"
    return criterion.double(), predictor, DSALoss(DIM, k=4, relation_norm=norm).double()


def _loss(case: str, x: dict[str, torch.Tensor], criterion: nn.Module, predictor: nn.Module,
          dsa: DSALoss) -> torch.Tensor:
    base, _, extra = case.partition("+")
    z1, z2 = x["z1"], x["z2"]
    if base in ("byol", "triplet"):
        loss = criterion(predictor(z1), predictor(z2), x["t1"], x["t2"])
    elif base == "moco":  # a second step sees the first step's keys in the queue
        loss = criterion(z1, z2, x["t1"], x["t2"]) + criterion(z2, z1, x["t2"], x["t1"])
    else:
        loss = criterion(predictor(z1), predictor(z2))
    if extra:
        loss = loss + dsa(z1, z2, x["e1"], x["e2"], x["e0"])["loss"]
    return loss


def _gradients(case: str, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    criterion, predictor, dsa = _modules(case)
    x = {k: v.clone().requires_grad_(k in ("z1", "z2")) for k, v in x.items()}
    loss = _loss(case, x, criterion, predictor, dsa)
    loss.backward()
    out = {"loss": loss.detach(), "z1": x["z1"].grad, "z2": x["z2"].grad,
           **{f"buffer:{name}": b.clone() for name, b in criterion.named_buffers()}}
    for prefix, module in (("predictor", predictor), ("relation", dsa.relation)):
        for name, p in module.named_parameters():
            out[f"{prefix}.{name}"] = (p.grad if p.grad is not None
                                       else torch.zeros_like(p))
    return out


def _worker(rank: int, init: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
    results = {}
    for case in CASES:
        x = {k: v[rows] for k, v in _inputs().items()}
        results[case] = _gradients(case, x)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def per_rank(tmp_path_factory) -> list[dict[str, dict[str, torch.Tensor]]]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(f"file://{out / 'store'}", str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("case", CASES)
def test_two_processes_match_one_with_the_whole_batch(case, per_rank):
    single = _gradients(case, _inputs())
    ranks = [results[case] for results in per_rank]
    loss = sum(r["loss"] for r in ranks) / WORLD
    torch.testing.assert_close(loss, single["loss"], atol=1e-5, rtol=0)
    for view in ("z1", "z2"):
        gathered = torch.cat([r[view] for r in ranks]) / WORLD
        torch.testing.assert_close(gathered, single[view], atol=1e-5, rtol=0)
    for name in single:
        if name.startswith("buffer:"):  # MoCo's queue: the same on every rank
            for r in ranks:
                torch.testing.assert_close(r[name], single[name], atol=1e-12, rtol=0)
        elif "." in name:
            averaged = sum(r[name] for r in ranks) / WORLD
            torch.testing.assert_close(averaged, single[name], atol=1e-5, rtol=0)

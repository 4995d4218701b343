"""Train-step time of each method with and without DSA, and DSA's parts on their own.

Methods: SimCLR, BYOL, truncated triplet, Barlow Twins, VICReg and MoCo v2, all with
DSA's paper heads (projector 256 -> 64; MoCo's default 4096-key queue).

    python benchmarks/method_step_time.py [--repeats 7] [--resnet] [--resnet-repeats 3]
                                          [--threads N] [--nchw] [--methods M ...] [--out PATH]

Steps run eager, as `train.compile: false` runs them. Also times DSA's loss alone at its
default size (batch 256: 512 x 512 pairs, D = 64), forward+backward, and the
good-neighbour scores against the official-style loop (N = 256) and against the A A
product (N up to 4096).

Steps are timed round-robin (one step of every configuration per round, median over
rounds), so load from other processes on a shared machine hits all configurations alike.
Models and batches are channels_last, as the training loop makes them by default
(`--nchw`: the contiguous layout of `train.channels_last: false`, for comparison).
Writes benchmarks/results/method_step_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from pydantic import TypeAdapter

from pipeline.losses.dsa import DSALoss, good_neighbour_scores, knn_indices
from pipeline.methods import build_method
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import Backbone, DSARegulator, Method

RESULTS = Path(__file__).parent / "results" / "method_step_time.json"
LOAD_BEFORE = os.getloadavg()  # other jobs' load when the benchmark started
METHODS = ("simclr", "byol", "triplet", "barlow_twins", "vicreg", "moco")
# DSA's paper heads (64-d embeddings) for every method; a predictor where there is one
HEADS = {"projector": {"hidden_dim": 256, "output_dim": 64},
         "predictor": {"hidden_dim": 256}}
WITH_PREDICTOR = ("byol", "triplet")
BACKBONES = {  # name -> (backbone params, image shape)
    "small_cnn16_8x8": ({"name": "small_cnn", "width": 16}, (1, 8, 8)),
    "resnet18_cifar_32x32": ({"name": "resnet18", "cifar_stem": True}, (3, 32, 32)),
}


def build(method: str, dsa: bool, backbone: dict, channels: int,
          memory_format: torch.memory_format):
    cfg = {"name": method, **{k: v for k, v in HEADS.items()
                              if method in WITH_PREDICTOR or k == "projector"}}
    encoder = Encoder(TypeAdapter(Backbone).validate_python(backbone), channels,
                      [0.5] * channels, [0.25] * channels)
    regulator = DSARegulator(name="dsa") if dsa else None
    model = build_method(TypeAdapter(Method).validate_python(cfg), encoder, 10, regulator)
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    return model, optimizer


def train_step(model, optimizer, images: torch.Tensor, step: int,
               memory_format: torch.memory_format) -> float:
    started = time.perf_counter()
    view1, view2 = (v.contiguous(memory_format=memory_format)
                    for v in (images.flip(-1), images.roll(1, dims=-1)))
    outputs = model(view1, view2, None, images)
    optimizer.zero_grad(set_to_none=True)
    outputs["loss"].backward()
    optimizer.step()
    model.after_optimizer_step(step, 1000)
    return time.perf_counter() - started


def step_times(backbone_name: str, batch: int, repeats: int,
               memory_format: torch.memory_format, methods: tuple[str, ...] = METHODS
               ) -> dict[str, float]:
    backbone, shape = BACKBONES[backbone_name]
    torch.manual_seed(0)
    images = torch.rand(batch, *shape).contiguous(memory_format=memory_format)
    configs = {f"{m}{'+dsa' if dsa else ''}": build(m, dsa, backbone, shape[0], memory_format)
               for m in methods for dsa in (False, True)}
    times: dict[str, list[float]] = {name: [] for name in configs}
    for round_ in range(repeats + 1):
        for name, (model, optimizer) in configs.items():
            seconds = train_step(model, optimizer, images, round_ + 1, memory_format)
            if round_ > 0:  # the first round warms up allocators and kernels
                times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}


def official_style_scores(features: torch.Tensor, k: int, mu: int) -> torch.Tensor:
    """The official code's shape: Python loops over samples and neighbours, on tensors."""
    e = torch.nn.functional.normalize(features, dim=1)
    similarity = e @ e.T
    similarity.fill_diagonal_(-float("inf"))
    neighbours = similarity.topk(k, dim=1).indices
    scores = torch.zeros(features.shape[0])
    for i in range(features.shape[0]):
        good = 0
        for j in neighbours[i]:
            count = 0
            for m in neighbours[j]:
                if (neighbours[m] == i).any():
                    count += 1
            good += count > mu
        scores[i] = good / k
    return scores


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def dsa_loss_times(batch: int, dim: int, prior_dim: int, repeats: int) -> dict[str, float]:
    """Forward+backward of `DSALoss` alone (default params), nothing gathered."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    loss = DSALoss(dim)
    z1, z2 = (torch.randn(batch, dim, generator=generator, requires_grad=True)
              for _ in range(2))
    priors = [torch.randn(batch, prior_dim, generator=generator) for _ in range(3)]

    def step() -> None:
        loss(z1, z2, *priors)["loss"].backward()

    return {"batch": batch, "dim": dim, "prior_dim": prior_dim,
            "forward_backward_seconds": median_seconds(step, repeats)}


def product_form_scores(features: torch.Tensor, k: int, mu: int) -> torch.Tensor:
    """The matrix-product form: c_ij = (A A)_ji for the kNN adjacency A (N^3)."""
    neighbours = knn_indices(features, k)
    adjacency = torch.zeros(len(neighbours), len(neighbours)).scatter_(1, neighbours, 1.0)
    counts = (adjacency @ adjacency).T  # counts[i, j] = c_ij
    return ((counts > mu) & adjacency.bool()).sum(dim=1).float() / k


def neighbour_scaling(sizes: tuple[int, ...], dim: int, k: int) -> dict[str, dict]:
    result = {}
    for n in sizes:
        features = torch.randn(n, dim, generator=torch.Generator().manual_seed(n))
        assert torch.equal(good_neighbour_scores(features, k),
                           product_form_scores(features, k, 1)), "forms differ"
        result[str(n)] = {
            "gather_seconds": median_seconds(lambda f=features: good_neighbour_scores(f, k), 3),
            "product_seconds": median_seconds(
                lambda f=features: product_form_scores(f, k, 1), 3)}
    return result


def neighbour_times(n: int, dim: int, k: int, repeats: int) -> dict[str, float]:
    features = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    median = median_seconds(lambda: good_neighbour_scores(features, k), repeats)
    started = time.perf_counter()
    slow = official_style_scores(features, k, 1)
    loop = time.perf_counter() - started
    assert torch.equal(good_neighbour_scores(features, k), slow), "vectorised and loop differ"
    return {"n": n, "dim": dim, "k": k, "vectorised_seconds": median,
            "official_loop_seconds": loop, "speedup": loop / median}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--resnet", action="store_true", help="also time resnet18 (slow)")
    parser.add_argument("--resnet-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--nchw", action="store_true", help="contiguous NCHW, not channels_last")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    backbones = {"small_cnn16_8x8": args.repeats}
    if args.resnet:
        backbones["resnet18_cifar_32x32"] = args.resnet_repeats
    neighbours = neighbour_times(256, 64, 20, args.repeats)
    neighbours["scaling"] = neighbour_scaling((256, 1024, 4096), 64, 20)
    print("good_neighbour_scores", neighbours, flush=True)
    loss = dsa_loss_times(args.batch, 64, 512, args.repeats)
    print("dsa_loss", loss, flush=True)
    steps = {}
    for name, repeats in backbones.items():
        memory_format = torch.contiguous_format if args.nchw else torch.channels_last
        times = step_times(name, args.batch, repeats, memory_format, tuple(args.methods))
        steps[name] = {
            "median_step_seconds": times,
            "dsa_overhead": {m: times[f"{m}+dsa"] / times[m] - 1 for m in args.methods},
            "repeats": repeats,
        }
        print(name, json.dumps(steps[name], indent=1), flush=True)
        write_results(args, steps, neighbours, loss)  # after each backbone: slow ones may be cut


def write_results(args: argparse.Namespace, steps: dict, neighbours: dict, loss: dict
                  ) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine(),
                    "load_average": os.getloadavg(), "gpu": torch.cuda.is_available(),
                    "torch": torch.__version__},
        "batch": args.batch,
        "memory_format": "nchw" if args.nchw else "channels_last",
        "dsa": "defaults: ema prior (own EMA for simclr, barlow_twins, vicreg; the target "
               "for byol, triplet, moco), k=20, prior pass in fp32 on CPU; eager",
        "load_before": LOAD_BEFORE,
        "step_time": steps,
        "good_neighbour_scores": neighbours,
        "dsa_loss_alone": loss,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()

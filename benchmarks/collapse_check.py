"""Cost of the per-epoch collapse check against the training steps it rides on.

    python benchmarks/collapse_check.py [--rounds 15] [--threads 2] [--resnet] [--out PATH]

The check (`pipeline.train.loop`) is one eval-mode forward pass of the epoch's last batch
and RankMe plus the feature std of its features; it runs once per epoch. Timed here, on
random images of each backbone's input shape and batch 128: a SimCLR training step
(forward, backward, Adam step) and the check, round-robin (one of each per round, median
over rounds), so load from other processes hits both alike. The per-epoch overhead is
check / (steps_per_epoch x step) for the datasets' epoch lengths at batch 128.
Writes benchmarks/results/collapse_check.json.
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

from pipeline.methods import build_method
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import Backbone, Method
from pipeline.params.training import MonitorConfig
from pipeline.train.monitor import batch_features, check_collapse

RESULTS = Path(__file__).parent / "results" / "collapse_check.json"
BATCH = 128
BACKBONES = {  # name -> (backbone params, image shape, {dataset: train images})
    "small_cnn16_8x8": ({"name": "small_cnn", "width": 16}, (1, 8, 8), {"digits": 884}),
    "small_cnn16_28x28": ({"name": "small_cnn", "width": 16}, (1, 28, 28),
                          {"fashion_mnist_1000_per_class": 10_000}),
    "resnet18_cifar_32x32": ({"name": "resnet18", "cifar_stem": True}, (3, 32, 32),
                             {"cifar10": 50_000}),
}


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(backbone: dict, shape: tuple[int, int, int], rounds: int) -> dict[str, float]:
    channels = shape[0]
    encoder = Encoder(TypeAdapter(Backbone).validate_python(backbone), channels,
                      [0.5] * channels, [0.25] * channels)
    method = build_method(TypeAdapter(Method).validate_python(
        {"name": "simclr", "projector": {"hidden_dim": 256, "output_dim": 64}}), encoder, 10)
    method = method.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (BATCH, *shape), dtype=torch.uint8, generator=generator)
    views = [torch.rand(BATCH, *shape, generator=generator).contiguous(
        memory_format=torch.channels_last) for _ in range(2)]
    labels = torch.zeros(BATCH, dtype=torch.int64)
    cpu = torch.device("cpu")

    def step() -> None:
        method.train()
        loss = method(*views, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def check() -> None:
        check_collapse(batch_features(method.encoder, images, cpu), MonitorConfig())

    step(), check()  # warm-up
    steps, checks = [], []
    for _ in range(rounds):
        steps.append(timed(step))
        checks.append(timed(check))
    return {"step_ms": 1e3 * statistics.median(steps),
            "check_ms": 1e3 * statistics.median(checks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--resnet", action="store_true", help="also ResNet-18 (slow on CPU)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or "unknown",
                    "torch": torch.__version__, "device": "cpu", "threads": args.threads},
        "workload": f"SimCLR step vs collapse check, batch {BATCH}, median of {args.rounds} "
                    "round-robin rounds",
        "backbones": {},
    }
    for name, (backbone, shape, datasets) in BACKBONES.items():
        if name.startswith("resnet") and not args.resnet:
            continue
        timing = measure(backbone, shape, args.rounds)
        timing["epoch_overhead_percent"] = {
            dataset: 100 * timing["check_ms"] / (images // BATCH * timing["step_ms"])
            for dataset, images in datasets.items()}
        results["backbones"][name] = timing
        print(name, json.dumps(timing), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

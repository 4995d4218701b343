"""The prepared GPU check (issue 18): one run on one GPU, at most 8 minutes on an H100/H200.

    python -m benchmarks.gpu_check [--cpu-smoke] [--out PATH]   (from the repository root)

Writes one JSON (default benchmarks/results/gpu_check.json) with:
- `smoke`: 20 training steps per method, with and without DSA, under
  `torch.cuda.set_sync_debug_mode("warn")`; every host-sync warning is listed by site;
- `agreement`: bf16 autocast against fp32, step by step, for SimCLR, triplet and DSA
  (two identical models fed the same batches; the losses per step and their gap);
- `throughput`: ResNet-18 (CIFAR stem) on 32x32 images, images/s of the training step with
  the memory loader and with the stream, bf16 + channels_last, with and without
  `train.compile`, peak GPU memory of each; DSA's overhead on SimCLR and BYOL;
- `features`: feature-extraction images/s;
- `probes`: kNN (k=20, 10,000 queries) and the linear probe (1,000 classes, the default
  weight-decay sweep, fp32) on 1.28M x 2048 synthetic features held in host memory, as
  the probe stage holds them; target at most 60 s on one H100/H200.

`--cpu-smoke` runs every part at toy sizes on the CPU so the script cannot rot (a test
runs it); CUDA-only parts (sync sites, compile, peak memory) are recorded as skipped.
Each part writes the JSON as it finishes, so a run cut by a time limit keeps what it did.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import TypeAdapter

from pipeline.classify import knn_probe
from pipeline.data.batches import pretraining_batches
from pipeline.data.shards import write_shards
from pipeline.data.sources.base import ImageSet
from pipeline.data.views import make_views
from pipeline.evaluate.probe import linear_probe
from pipeline.methods import build_method
from pipeline.nets.backbones import Encoder
from pipeline.nets.extract import extract_features
from pipeline.params.evaluation import LinearProbeConfig, MinibatchProbeConfig
from pipeline.params.methods import Backbone, Method
from pipeline.params.training import RunConfig
from pipeline.precision import autocast

RESULTS = Path(__file__).parent / "results" / "gpu_check.json"
METHODS = ("simclr", "byol", "triplet", "supervised")
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {"batch": 256, "smoke_steps": 20, "agreement_steps": 20, "timed_steps": 30,
            "warmup_steps": 5, "images": 12_288, "feature_images": 50_000, "workers": 8,
            "backbone": {"name": "resnet18", "cifar_stem": True}, "image_side": 32,
            "probe_rows": 1_281_167, "probe_dim": 2048, "probe_classes": 1000,
            "probe_queries": 10_000, "probe_budget_gib": LinearProbeConfig().full_batch_gib,
            "probe_epochs": MinibatchProbeConfig().epochs,
            "probe_batch": MinibatchProbeConfig().batch_size},
    # the probe step at toy size, on the same (mini-batch) path: a budget it exceeds
    "cpu-smoke": {"batch": 16, "smoke_steps": 1, "agreement_steps": 2, "timed_steps": 1,
                  "warmup_steps": 1, "images": 64, "feature_images": 64, "workers": 1,
                  "backbone": {"name": "small_cnn", "width": 4}, "image_side": 16,
                  "probe_rows": 3000, "probe_dim": 64, "probe_classes": 20,
                  "probe_queries": 500, "probe_budget_gib": 1e-4, "probe_epochs": 2,
                  "probe_batch": 256},
}
PROBE_TARGET_SECONDS = 60.0
SKIPPED_ON_CPU = {"skipped": "needs CUDA"}


def run_config(method: str, dsa: bool, size: dict[str, Any], loader: str = "memory",
               compile_: bool = False) -> RunConfig:
    """A run as params.yaml would give it (k small enough for the toy batch)."""
    method_cfg: dict[str, Any] = {"name": method}
    if method == "triplet":
        method_cfg["k"] = min(9, size["batch"] // 4)
    return RunConfig.model_validate({
        "dataset": "gpu_check", "backbone": size["backbone"], "method": method_cfg,
        "regulator": {"name": "dsa", "k": min(20, size["batch"] // 4)} if dsa else None,
        "train": {"batch_size": size["batch"], "channels_last": True, "compile": compile_},
        "data": {"loader": loader, "workers": size["workers"], "shuffle_buffer": 256}})


def write_data(directory: Path, size: dict[str, Any]) -> Path:
    """Random 3-channel images as train shards (decoding cost is what the stream pays)."""
    rng = np.random.default_rng(0)
    side, count = size["image_side"], size["images"]
    images = rng.integers(0, 256, size=(count, side, side, 3), dtype=np.uint8)
    labels = np.arange(count, dtype=np.int64) % 10
    write_shards({"train": ImageSet(images, labels, np.arange(count))},
                 [str(c) for c in range(10)], directory, 1024, {"name": "gpu_check"})
    return directory


def build(run: RunConfig, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    encoder = Encoder(TypeAdapter(Backbone).validate_python(run.backbone.model_dump()), 3,
                      [0.5] * 3, [0.25] * 3)
    method = TypeAdapter(Method).validate_python(run.method.model_dump())
    model = build_method(method, encoder, 10, run.regulator).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    return model, optimizer


class Trainer:
    """The training loop's step (views, autocast, regulator input, EMA update), alone."""

    def __init__(self, run: RunConfig, device: torch.device, bf16: bool):
        self.core, self.optimizer = build(run, device)
        self.model = torch.compile(self.core) if run.train.compile else self.core
        self.run, self.device, self.bf16, self.step_count = run, device, bf16, 0
        self.generator = torch.Generator(device=device).manual_seed(0)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last
        view1, view2 = (v.contiguous(memory_format=fmt)
                        for v in make_views(images, self.run.views, self.generator))
        with autocast(self.bf16, self.device):
            original = (images.float().div(255).contiguous(memory_format=fmt)
                        if self.core.regulator is not None else None)
            outputs = self.model(view1, view2, labels, original)
        self.optimizer.zero_grad(set_to_none=True)
        outputs["loss"].backward()
        self.optimizer.step()
        self.step_count += 1
        self.core.after_optimizer_step(self.step_count, 1000)
        return outputs["loss"].detach()


def batch_stream(run: RunConfig, shard_dir: Path, device: torch.device
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The run's own loader, epoch after epoch, as long as asked."""
    batches = pretraining_batches(run, shard_dir, 0, 1, device)
    epoch = 0
    while True:
        epoch += 1
        yield from batches.epoch(epoch)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sync_sites(caught: list[warnings.WarningMessage]) -> dict[str, int]:
    """Host-sync warnings of `set_sync_debug_mode("warn")`, counted by source line."""
    sites = Counter(f"{Path(w.filename).name}:{w.lineno}: {str(w.message).splitlines()[0]}"
                    for w in caught if "synchroniz" in str(w.message))
    return dict(sites.most_common())


def smoke(shard_dir: Path, device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """`smoke_steps` steps per method (+DSA), finite losses, and where the host syncs."""
    cuda = device.type == "cuda"
    results = {}
    for method in METHODS:
        for dsa in (False, True) if method != "supervised" else (False,):
            run = run_config(method, dsa, size)
            trainer = Trainer(run, device, bf16=cuda)
            batches = batch_stream(run, shard_dir, device)
            trainer.step(*next(batches))  # first step: allocations and lazy init, not counted
            synchronize(device)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if cuda:
                    torch.cuda.set_sync_debug_mode("warn")
                try:
                    losses = [trainer.step(*next(batches)) for _ in range(size["smoke_steps"])]
                    synchronize(device)
                finally:
                    if cuda:
                        torch.cuda.set_sync_debug_mode("default")
            values = [float(loss) for loss in losses]
            results[f"{method}{'+dsa' if dsa else ''}"] = {
                "losses": values, "finite": all(np.isfinite(values)),
                "sync_sites": sync_sites(caught) if cuda else SKIPPED_ON_CPU}
    return results


def agreement(shard_dir: Path, device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """bf16 autocast against fp32 from the same weights on the same batches, step by step."""
    results = {}
    for name, method, dsa in (("simclr", "simclr", False), ("triplet", "triplet", False),
                              ("simclr+dsa", "simclr", True), ("byol+dsa", "byol", True)):
        run = run_config(method, dsa, size)
        exact, low = Trainer(run, device, bf16=False), Trainer(run, device, bf16=True)
        batches = batch_stream(run, shard_dir, device)
        rows = []
        for _ in range(size["agreement_steps"]):
            images, labels = next(batches)
            fp32, bf16 = float(exact.step(images, labels)), float(low.step(images, labels))
            rows.append({"fp32": fp32, "bf16": bf16,
                         "relative_gap": abs(bf16 - fp32) / max(abs(fp32), 1e-12)})
        results[name] = {"steps": rows,
                         "max_relative_gap": max(row["relative_gap"] for row in rows)}
    return results


def images_per_second(step: Callable[[], Any], device: torch.device, size: dict[str, Any]
                      ) -> dict[str, float]:
    for _ in range(size["warmup_steps"]):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(size["timed_steps"]):
        step()
    synchronize(device)
    seconds = time.perf_counter() - started
    row = {"images_per_second": size["timed_steps"] * size["batch"] / seconds,
           "step_seconds": seconds / size["timed_steps"]}
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def throughput(shard_dir: Path, device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """Training images/s by loader and compile (bf16 where native, channels_last)."""
    cuda = device.type == "cuda"
    results: dict[str, Any] = {}
    configs = [("simclr", False, "memory", False), ("simclr", False, "stream", False),
               ("simclr", True, "memory", False), ("byol", False, "memory", False),
               ("byol", True, "memory", False), ("simclr", False, "memory", True),
               ("simclr", True, "memory", True)]
    for method, dsa, loader, compile_ in configs:
        name = f"{method}{'+dsa' if dsa else ''} {loader}{' compile' if compile_ else ''}"
        if compile_ and not cuda:
            results[name] = SKIPPED_ON_CPU
            continue
        run = run_config(method, dsa, size, loader, compile_)
        trainer = Trainer(run, device, bf16=cuda)
        batches = batch_stream(run, shard_dir, device)
        results[name] = images_per_second(lambda t=trainer, b=batches: t.step(*next(b)),
                                          device, size)
    results["dsa_overhead"] = {
        method: results[f"{method} memory"]["images_per_second"]
        / results[f"{method}+dsa memory"]["images_per_second"] - 1
        for method in ("simclr", "byol")}
    return results


def features(device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """`extract_features` (the evaluation's path) on uint8 images in CPU memory."""
    run = run_config("simclr", False, size)
    encoder = build(run, torch.device("cpu"))[0].encoder
    side = size["image_side"]
    images = torch.randint(0, 256, (size["feature_images"], 3, side, side), dtype=torch.uint8)
    with autocast(device.type == "cuda", device):
        extract_features(encoder, images[:512], device=device)  # warm-up
        synchronize(device)
        started = time.perf_counter()
        extracted = extract_features(encoder, images, device=device)
        seconds = time.perf_counter() - started
    return {"images": len(images), "images_per_second": len(images) / seconds,
            "feature_dim": extracted.shape[1]}


def class_means(size: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Class means 4.5 noise standard deviations apart pairwise, at any dimension."""
    generator = torch.Generator(device=device).manual_seed(0)
    dim = size["probe_dim"]
    return 4.5 / (2 * dim) ** 0.5 * torch.randn(size["probe_classes"], dim,
                                                 generator=generator, device=device)


def synthetic_features(means: torch.Tensor, rows: int, seed: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-structured ReLU features in host memory: a class mean plus unit noise, drawn
    on the means' device a block at a time (1.28M x 2048 on a CPU would take minutes)."""
    generator = torch.Generator(device=means.device).manual_seed(seed)
    labels = torch.randint(0, len(means), (rows,), generator=generator, device=means.device)
    features = torch.empty(rows, means.shape[1])
    for start in range(0, rows, 65_536):
        block = labels[start:start + 65_536]
        noise = torch.randn(len(block), means.shape[1], generator=generator,
                            device=means.device)
        features[start:start + len(block)] = (means[block] + noise).relu().cpu()
    return features, labels.cpu()


def probes(device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """The probe stage's kNN and linear probe at ImageNet's size, timed (fp32, no TF32)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    means = class_means(size, device)
    train_x, train_y = synthetic_features(means, size["probe_rows"], seed=1)
    test_x, test_y = synthetic_features(means, size["probe_queries"], seed=2)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    knn = knn_probe(train_x, train_y, test_x, test_y, k=20)
    synchronize(device)
    knn_seconds = time.perf_counter() - started
    minibatch = MinibatchProbeConfig(epochs=size["probe_epochs"],
                                     batch_size=size["probe_batch"])
    linear = linear_probe(train_x, train_y, test_x, test_y, LinearProbeConfig().weight_decays,
                          full_batch_gib=size["probe_budget_gib"], minibatch=minibatch,
                          device=device)
    synchronize(device)
    seconds = time.perf_counter() - started
    row = {"rows": len(train_x), "dim": train_x.shape[1], "classes": size["probe_classes"],
           "queries": len(test_x), "knn20_top1": knn, "knn_seconds": knn_seconds,
           "linear_seconds": seconds - knn_seconds, "seconds": seconds,
           "target_seconds": PROBE_TARGET_SECONDS,
           "within_target": seconds <= PROBE_TARGET_SECONDS, "linear": linear}
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def describe(device: torch.device, mode: str) -> dict[str, Any]:
    info = {"mode": mode, "torch": torch.__version__, "machine": platform.platform(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["native_bf16"] = torch.cuda.is_bf16_supported(including_emulation=False)
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="toy sizes on the CPU; CUDA-only parts recorded as skipped")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --cpu-smoke")
    device = torch.device("cuda", 0) if mode == "gpu" else torch.device("cpu")
    size = SIZES[mode]
    results: dict[str, Any] = {"setup": {**describe(device, mode), **size}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        shard_dir = write_data(Path(directory), size)
        for part, function in (("smoke", smoke), ("agreement", agreement),
                               ("throughput", throughput)):
            results[part] = function(shard_dir, device, size)
            write(args.out, results, started)
    for part, function in (("features", features), ("probes", probes)):
        results[part] = function(device, size)
        write(args.out, results, started)
    return results


def write(path: Path, results: dict[str, Any], started: float) -> None:
    results["seconds"] = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"{path}: {', '.join(k for k in results if k not in ('setup', 'seconds'))} "
          f"after {results['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()

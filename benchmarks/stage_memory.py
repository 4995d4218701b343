"""Peak memory per stage and loader against the dataset's size: flat where the design says.

Synthetic shards (random 32x32 RGB images stored raw, 500 per shard, a `train` and a
`test` split of the same size) at multiples of a base size. Each stage runs in a fresh
Python process, and each process is measured on its own: its peak RSS (the kernel's
high-water mark, VmHWM) minus its own baseline, the high-water mark once the interpreter,
torch and the pipeline are imported and the encoder (a small convnet) has run one image,
before any shard is read. Loader processes are forked by their rank: they are read by the
rank just before its last batch, against the rank's baseline. Ray's system processes
(raylet, GCS, dashboard) are not measured; the Ray worker running the loader is.

Stages (what the pipeline runs there):
- `features`: the features stage's `split_features` of `train`, batches of 64.
- `monitor`: the online monitor's streamed features of the first 1,000 images of `train`
  and `test`.
- `geometry`: geometry's two views of every `test` image, and their features.
- `finetune`: one fine-tuning epoch over `train` streamed (the split is over
  `evaluate.memory_budget_mb`), then the streamed `test` split.
- `loader_auto`: one epoch of the pretraining loader with `data.loader: auto` over the
  budget (so streamed), 2 loader processes, a 1,000-image shuffle buffer, batches of 64:
  the rank and each loader process.
- `ray_worker`: the same loader inside a Ray worker of a local cluster: the worker and its
  loader processes.
- `loader_memory`: the memory loader (`data.loader: memory`), which holds the split by
  design: it grows with the data, and is refused above the budget.

Usage: python -m benchmarks.stage_memory [--base-mb 16] [--scales 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "stage_memory.json"
SIDE, CHANNELS, PER_SHARD = 32, 3, 500
IMAGE_BYTES = SIDE * SIDE * CHANNELS
STAGES = ("features", "monitor", "geometry", "finetune", "loader_auto", "ray_worker",
          "loader_memory")
BATCH, SHUFFLE_BUFFER, LOADER_WORKERS, MONITOR_SAMPLES = 64, 1000, 2, 1000
MIB = 1 << 20


def write_dataset(out: Path, images: int) -> Path:
    """`train` and `test` splits of `images` random images each (10 classes)."""
    from pipeline.data.shards import write_shards
    from pipeline.data.sources import ImageSet

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    splits = {}
    for split in ("train", "test"):
        pixels = rng.integers(0, 256, (images, SIDE, SIDE, CHANNELS), dtype=np.uint8)
        labels = np.arange(images, dtype=np.int64) % 10
        splits[split] = ImageSet(pixels, labels, np.arange(images))
    write_shards(splits, [str(c) for c in range(10)], out, PER_SHARD, {"name": "synthetic"},
                 workers=1)
    return out


# ------------------------------------------------------------------- inside a measured process


def high_water_mark(pid: int | str = "self") -> int:
    """Peak resident set size of a process, in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def child_pids() -> list[int]:
    """Processes this one forked (its loader processes)."""
    own = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == own:
                found.append(int(entry.name))
    return found


def _encoder():
    import torch

    from pipeline.nets.backbones import Encoder
    from pipeline.params import SmallCNNBackbone

    torch.manual_seed(0)
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=8), CHANNELS, [0.5] * 3,
                      [0.25] * 3).eval()
    with torch.no_grad():
        encoder(torch.zeros(1, CHANNELS, SIDE, SIDE))  # kernels and thread pools: baseline
    return encoder


def _run_config(loader: str, budget_mb: int):
    from pipeline.params import RunConfig

    return RunConfig.model_validate({
        "dataset": "synthetic", "backbone": {"name": "small_cnn"}, "method": {"name": "simclr"},
        "train": {"batch_size": BATCH},
        "data": {"loader": loader, "memory_budget_mb": budget_mb, "workers": LOADER_WORKERS,
                 "shuffle_buffer": SHUFFLE_BUFFER}})


def _loader_epoch(shard_dir: str, loader: str, budget_mb: int) -> dict[str, int]:
    """One epoch of the pretraining loader; the rank's and each loader process's peak."""
    import torch

    from pipeline.data.batches import pretraining_batches

    batches = pretraining_batches(_run_config(loader, budget_mb), shard_dir, 0, 1,
                                  torch.device("cpu"))
    peaks: dict[str, int] = {}
    for step, _ in enumerate(batches.epoch(1), start=1):
        if step == batches.steps_per_epoch - 1:
            for number, pid in enumerate(sorted(child_pids()), start=1):
                peaks[f"loader process {number}"] = high_water_mark(pid)
    return peaks


def measure(stage: str, shard_dir: str, budget_mb: int) -> dict[str, int]:
    """Peak growth over the baseline, in bytes, of every process of `stage`."""
    import torch

    from pipeline.data.views import make_views  # noqa: F401  (imported before the baseline)
    from pipeline.evaluate.features import split_features
    from pipeline.evaluate.finetune import finetune_split
    from pipeline.params import FinetuneConfig, ViewsConfig

    encoder = _encoder()
    baseline = high_water_mark()
    children: dict[str, int] = {}
    if stage == "features":
        split_features(encoder, shard_dir, "train", BATCH, "cpu")
    elif stage == "monitor":
        for split in ("train", "test"):
            split_features(encoder, shard_dir, split, BATCH, "cpu", MONITOR_SAMPLES)
    elif stage == "geometry":
        from stages.geometry import view_features

        view_features(encoder, shard_dir, ViewsConfig(), BATCH, torch.Generator().manual_seed(0))
    elif stage == "finetune":
        finetune_split(encoder, shard_dir, "train", "test",
                       FinetuneConfig(epochs=1, batch_size=BATCH), budget_mb * MIB,
                       SHUFFLE_BUFFER, "cpu")
    elif stage in ("loader_auto", "loader_memory"):
        children = _loader_epoch(shard_dir, stage.removeprefix("loader_"), budget_mb)
    else:
        raise ValueError(stage)
    peaks = {"process": high_water_mark() - baseline}
    peaks.update({name: peak - baseline for name, peak in children.items()})
    return peaks


def _ray_worker(shard_dir: str, budget_mb: int, address: str | None) -> dict[str, int]:
    """`loader_auto` in a Ray worker of its own (a fresh process: its own runtime env)."""
    import ray

    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", num_cpus=2, include_dashboard=False)  # never a running one

    @ray.remote(num_cpus=1, max_calls=1,
                runtime_env={"env_vars": {"STAGE_MEMORY_RUN": str(time.time_ns())}})
    def in_worker(shard_dir: str, budget_mb: int) -> dict[str, int]:
        return measure("loader_auto", shard_dir, budget_mb)

    try:
        peaks = ray.get(in_worker.remote(shard_dir, budget_mb))
    finally:
        ray.shutdown()
    return {("ray worker" if name == "process" else f"ray worker's {name}"): peak
            for name, peak in peaks.items()}


def _child_main(args: argparse.Namespace) -> None:
    if args.child == "ray_worker":
        peaks = _ray_worker(args.shards, args.budget_mb, args.ray_address)
    else:
        peaks = measure(args.child, args.shards, args.budget_mb)
    print(json.dumps(peaks))


# --------------------------------------------------------------------------------- driver


def run_stage(stage: str, shard_dir: Path, budget_mb: int,
              ray_address: str | None = None) -> dict[str, int]:
    """Run one stage in a fresh process; return each of its processes' peak growth."""
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "benchmarks.stage_memory", "--child", stage,
               "--shards", str(shard_dir), "--budget-mb", str(budget_mb)]
    if ray_address:
        command += ["--ray-address", ray_address]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-mb", type=int, default=16,
                        help="decoded size of each split at scale 1, and the budget")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--stages", nargs="+", default=list(STAGES))
    parser.add_argument("--child", choices=STAGES)
    parser.add_argument("--shards")
    parser.add_argument("--budget-mb", type=int, default=16)
    parser.add_argument("--ray-address")
    args = parser.parse_args()
    if args.child:
        _child_main(args)
        return
    base_images = args.base_mb * MIB // IMAGE_BYTES
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            shard_dir = write_dataset(Path(tmp) / f"x{scale}", base_images * scale)
            for stage in args.stages:
                started = time.perf_counter()
                peaks = run_stage(stage, shard_dir, args.base_mb)
                row = {"stage": stage, "scale": scale, "images_per_split": base_images * scale,
                       "split_mib": round(base_images * scale * IMAGE_BYTES / MIB, 1),
                       "budget_mib": args.base_mb,
                       "peak_growth_mib": {k: round(v / MIB, 1) for k, v in peaks.items()},
                       "seconds": round(time.perf_counter() - started, 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    RESULTS.write_text(json.dumps({
        "what": "peak RSS growth over each process's own interpreter+torch+pipeline "
                "baseline (VmHWM), per stage and process, at multiples of a base size",
        "dataset": f"synthetic: train and test of {SIDE}x{SIDE}x{CHANNELS} uint8 images each, "
                   f"raw, {PER_SHARD} per shard; scale 1 = {args.base_mb} MiB per split",
        "settings": {"batch": BATCH, "shuffle_buffer": SHUFFLE_BUFFER,
                     "loader_workers": LOADER_WORKERS, "monitor_samples": MONITOR_SAMPLES,
                     "budget_mib": args.base_mb, "encoder": "small_cnn width 8"},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

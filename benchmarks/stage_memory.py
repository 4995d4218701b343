"""Peak memory per stage and loader against the dataset's size: flat where the design says.

Synthetic shards (random 32x32 RGB images stored raw, 500 per shard, a `train` and a
`test` split of the same size) at multiples of a base size. Each stage runs in a fresh
Python process, and each process is measured on its own, Ray's system processes (raylet,
GCS, dashboard) excluded:

- a stage's own process: its peak RSS (the kernel's high-water mark, VmHWM) minus its
  baseline, the high-water mark once the interpreter, torch and the pipeline's modules are
  imported, the encoder (a small convnet) has run one image and a throwaway optimiser has
  taken one step (torch imports torch._dynamo then, ~150 MiB that every training process
  pays once; recorded apart as `baseline_mib.first_optimizer_step`), before any shard is
  read;
- a loader process (forked by its rank when the epoch starts): its anonymous memory
  (RssAnon) minus the rank's at the fork, which the child inherits page for page, sampled
  at every batch the rank receives, the largest kept. (Its VmHWM counts the torch and
  Python pages it shares with the rank, which the rank's baseline counts too, but not the
  shared library pages it never touches: subtracting the rank's baseline from it gave
  negative figures.)

What a stage keeps by design is computed and subtracted, so that what is left is what
the images cost: the features it returns (float32 [N, D], counted twice, as the per-batch
list and its concatenation coexist for a moment), or the split itself for the memory
loader. `beyond_design_mib` should then be the same at every scale: buffers, one batch's
activations, the allocator's slack.

Stages (what the pipeline runs there):
- `features`: the features stage's `split_features` of `train`, batches of 64.
- `monitor`: the online monitor's probes (`monitor_probes`, `max_samples` 1,000): the
  streamed features of the first 1,000 images of `train` and `test`, kNN and linear.
- `geometry`: geometry's two views of every `test` image, and their features.
- `finetune`: one fine-tuning epoch over `train` streamed (the split is over the budget,
  `evaluate.memory_budget_mb`), then the streamed `test` split's features.
- `loader_stream`: one epoch of the pretraining loader with `data.loader: auto` over the
  budget (half the base size, so streamed at every scale) and `data.workers: 0`: the
  reader pipeline (shards, a 1,000-image shuffle buffer, batches of 64) in the rank's own
  process.
- `loader_auto`: the same with 2 loader processes: the rank and each loader process.
- `ray_worker`: that loader inside a Ray worker of a local cluster: the worker and its
  loader processes.
- `loader_memory`: the memory loader (`data.loader: memory`, in the rank), which holds
  the split by design: it grows with the data (the pretrain stage refuses it above the
  budget before Ray starts; called directly here, it is not).

Usage: python -m benchmarks.stage_memory [--base-mb 16] [--scales 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.record import machine, write_results

RESULTS = Path(__file__).parent / "results" / "stage_memory.json"
SIDE, CHANNELS, PER_SHARD = 32, 3, 500
IMAGE_BYTES = SIDE * SIDE * CHANNELS
STAGES = ("features", "monitor", "geometry", "finetune", "loader_stream", "loader_auto",
          "ray_worker", "loader_memory")
BATCH, SHUFFLE_BUFFER, LOADER_WORKERS, MONITOR_SAMPLES, WIDTH = 64, 1000, 2, 1000, 8
FEATURE_DIM = 4 * WIDTH  # small_cnn's
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
    write_shards(splits, [str(c) for c in range(10)], out, PER_SHARD, {"name": "synthetic"})
    return out


def held_by_design(stage: str, images: int) -> int:
    """Bytes a stage keeps by design over `images` per split: features ([N, D] float32
    and int64 labels, twice while the batches are concatenated), or the split itself."""
    def features(n: int, views: int = 1) -> int:
        return 2 * n * (views * FEATURE_DIM * 4 + 8)

    return {"features": features(images), "geometry": features(images, views=2),
            "finetune": features(images),
            "monitor": 2 * features(min(images, MONITOR_SAMPLES)),
            "loader_memory": images * (IMAGE_BYTES + 8)}.get(stage, 0)


# ------------------------------------------------------------------- inside a measured process


def status_bytes(field: str, pid: int | str = "self") -> int:
    """A memory figure of /proc/<pid>/status (VmHWM, VmRSS, RssAnon), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for process {pid}")


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
    from pipeline.params.methods import SmallCNNBackbone

    torch.manual_seed(0)
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=WIDTH), CHANNELS, [0.5] * 3,
                      [0.25] * 3).eval()
    with torch.no_grad():
        encoder(torch.zeros(1, CHANNELS, SIDE, SIDE))  # kernels and thread pools: baseline
    return encoder


def _first_optimizer_step() -> None:
    """One step of a throwaway optimiser: torch's first `Optimizer.step` imports
    torch._dynamo (and sympy, ~900 modules, ~150 MiB resident for good), whatever the model.
    Every training process pays it once (pretrain's ranks, fine-tuning, the monitor's
    L-BFGS probe); it is measured apart so that the peaks show what the images cost."""
    import torch

    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.0)
    weight.sum().backward()
    optimizer.step()


def _run_config(loader: str, budget_mb: int, workers: int = LOADER_WORKERS):
    from pipeline.params.training import RunConfig

    return RunConfig.model_validate({
        "dataset": "synthetic", "backbone": {"name": "small_cnn", "width": WIDTH},
        "method": {"name": "simclr"}, "train": {"batch_size": BATCH,
                                                "monitor": {"max_samples": MONITOR_SAMPLES}},
        "data": {"loader": loader, "memory_budget_mb": budget_mb, "workers": workers,
                 "shuffle_buffer": SHUFFLE_BUFFER}})


def _loader_epoch(shard_dir: str, loader: str, budget_mb: int, workers: int
                  ) -> dict[str, int]:
    """One epoch of the pretraining loader; each loader process's largest anonymous memory
    over what it inherited from the rank (sampled at every batch)."""
    import torch

    from pipeline.data.batches import pretraining_batches

    batches = pretraining_batches(_run_config(loader, budget_mb, workers), shard_dir, 0, 1,
                                  torch.device("cpu"))
    inherited = status_bytes("RssAnon")
    largest: dict[int, int] = {}
    for _ in batches.epoch(1):
        for pid in child_pids():
            try:
                largest[pid] = max(largest.get(pid, 0), status_bytes("RssAnon", pid))
            except (OSError, RuntimeError):  # a loader process that has just ended
                continue
    return {f"loader process {number}": anon - inherited
            for number, anon in enumerate((largest[pid] for pid in sorted(largest)), start=1)}


def measure(stage: str, shard_dir: str, budget_mb: int) -> dict[str, dict[str, int]]:
    """Peak growth over the baseline, in bytes, of every process of `stage` (`peaks`), and
    the baseline itself (`baseline`: the imports and encoder, then torch's first
    optimiser step)."""
    import torch

    import pipeline.data.batches  # noqa: F401  (every module a stage uses: in the baseline)
    from pipeline.evaluate.finetune import finetune_split
    from pipeline.nets.extract import split_features
    from pipeline.params.evaluation import FinetuneConfig
    from pipeline.params.methods import ViewsConfig
    from pipeline.train.monitor import monitor_probes
    from stages.geometry import view_features

    encoder = _encoder()
    imported = status_bytes("VmHWM")
    _first_optimizer_step()
    baseline = status_bytes("VmHWM")
    children: dict[str, int] = {}
    if stage == "features":
        split_features(encoder, shard_dir, "train", BATCH, "cpu")
    elif stage == "monitor":
        monitor_probes(encoder, shard_dir, _run_config("stream", budget_mb), BATCH,
                       torch.device("cpu"))
    elif stage == "geometry":
        view_features(encoder, shard_dir, ViewsConfig(), BATCH, torch.Generator().manual_seed(0))
    elif stage == "finetune":
        finetune_split(encoder, shard_dir, "train", "test",
                       FinetuneConfig(epochs=1, batch_size=BATCH), budget_mb * MIB,
                       SHUFFLE_BUFFER, "cpu")
    elif stage == "loader_stream":
        _loader_epoch(shard_dir, "auto", budget_mb, workers=0)
    elif stage == "loader_auto":
        children = _loader_epoch(shard_dir, "auto", budget_mb, LOADER_WORKERS)
    elif stage == "loader_memory":
        _loader_epoch(shard_dir, "memory", budget_mb, workers=0)
    else:
        raise ValueError(stage)
    return {"peaks": {"process": status_bytes("VmHWM") - baseline, **children},
            "baseline": {"imports_and_encoder": imported,
                         "first_optimizer_step": baseline - imported}}


def _ray_worker(shard_dir: str, budget_mb: int, address: str | None
                ) -> dict[str, dict[str, int]]:
    """`loader_auto` in a Ray worker of its own (a fresh process: its own runtime env)."""
    import ray

    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", num_cpus=2, include_dashboard=False)  # never a running one

    @ray.remote(num_cpus=1, max_calls=1,
                runtime_env={"env_vars": {"STAGE_MEMORY_RUN": str(time.time_ns())}})
    def in_worker(shard_dir: str, budget_mb: int) -> dict[str, dict[str, int]]:
        return measure("loader_auto", shard_dir, budget_mb)

    try:
        measured = ray.get(in_worker.remote(shard_dir, budget_mb))
    finally:
        ray.shutdown()
    peaks = {("ray worker" if name == "process" else f"ray worker's {name}"): peak
             for name, peak in measured["peaks"].items()}
    return {**measured, "peaks": peaks}


def _child_main(args: argparse.Namespace) -> None:
    if args.child == "ray_worker":
        measured = _ray_worker(args.shards, args.budget_mb, args.ray_address)
    else:
        measured = measure(args.child, args.shards, args.budget_mb)
    print(json.dumps(measured))


# --------------------------------------------------------------------------------- driver


def run_stage(stage: str, shard_dir: Path, budget_mb: int,
              ray_address: str | None = None) -> dict[str, dict[str, int]]:
    """Run one stage in a fresh process; return each of its processes' peak growth
    (`peaks`) and the stage process's baseline (`baseline`), in bytes."""
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


def stage_row(stage: str, scale: int, images: int, budget_mb: int,
              measured: dict[str, dict[str, int]]) -> dict[str, Any]:
    """One result row: every process's growth, and the stage process's beyond design."""
    peaks = measured["peaks"]
    main = "ray worker" if stage == "ray_worker" else "process"
    held = held_by_design(stage, images)
    return {"stage": stage, "scale": scale, "images_per_split": images,
            "split_mib": round(images * IMAGE_BYTES / MIB, 1), "budget_mib": budget_mb,
            "peak_growth_mib": {name: round(value / MIB, 1) for name, value in peaks.items()},
            "held_by_design_mib": round(held / MIB, 1),
            "beyond_design_mib": round((peaks[main] - held) / MIB, 1),
            "baseline_mib": {name: round(value / MIB, 1)
                             for name, value in measured["baseline"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-mb", type=int, default=16,
                        help="decoded size of each split at scale 1, twice the budget")
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
    started_on, started_at = machine(), time.perf_counter()
    base_images = args.base_mb * MIB // IMAGE_BYTES
    budget_mb = max(1, args.base_mb // 2)  # every scale over it: `auto` streams
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            shard_dir = write_dataset(Path(tmp) / f"x{scale}", base_images * scale)
            for stage in args.stages:
                started = time.perf_counter()
                measured = run_stage(stage, shard_dir, budget_mb)
                row = stage_row(stage, scale, base_images * scale, budget_mb, measured)
                row["seconds"] = round(time.perf_counter() - started, 1)
                print(json.dumps(row), flush=True)
                rows.append(row)
    write_results(RESULTS, {
        "what": "peak memory growth of each process of a stage over its own interpreter+"
                "torch+pipeline+first-optimiser-step baseline (VmHWM; loader processes: "
                "RssAnon over what they inherit at the fork), at multiples of a base size; "
                "held_by_design: the features a stage returns, or the split for the memory "
                "loader",
        "dataset": f"synthetic: train and test of {SIDE}x{SIDE}x{CHANNELS} uint8 images each, "
                   f"raw, {PER_SHARD} per shard; scale 1 = {args.base_mb} MiB per split",
        "settings": {"batch": BATCH, "shuffle_buffer": SHUFFLE_BUFFER,
                     "loader_workers": LOADER_WORKERS, "monitor_samples": MONITOR_SAMPLES,
                     "budget_mib": budget_mb,
                     "encoder": f"small_cnn width {WIDTH} ({FEATURE_DIM} features)"},
        "command": "python -m benchmarks.stage_memory " + " ".join(sys.argv[1:]),
        "machine": started_on, "seconds": round(time.perf_counter() - started_at, 1),
        "rows": rows})


if __name__ == "__main__":
    main()

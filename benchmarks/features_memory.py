"""Peak memory of the features@ driver against the dataset's size: flat by design.

The driver of `features@` (the machine that runs `dvc repro`) loads the encoder, submits one
Ray task per input shard and writes each shard's features as they arrive
(`pipeline.evaluate.ray_features.write_split_features`); it never holds images and holds
one shard's features at a time. This measures that process: synthetic shards (random
32x32 RGB images stored raw, 500 per shard, a `train` and a `test` split of the same size,
`benchmarks.stage_memory.write_dataset`) at several sizes; for each, a fresh driver
process joins one local Ray cluster (2 CPUs), builds the encoder (small_cnn width 32) and
reads the manifest, then extracts both splits to a temporary directory. Reported: the
driver's peak RSS (VmHWM) growth over its own baseline (taken after `ray.init`, the
imports and the encoder), against the split's decoded size and the features it writes.
The Ray workers (one shard each at a time) and Ray's system processes are not measured.

    python -m benchmarks.features_memory [--images 4000 16000 64000]
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

from benchmarks.stage_memory import IMAGE_BYTES, MIB, PER_SHARD, status_bytes, write_dataset

RESULTS = Path(__file__).parent / "results" / "features_memory.json"
ROOT = Path(__file__).resolve().parents[1]
BATCH = 64


def _driver(shard_dir: str, out: str) -> dict[str, int]:
    """What features@ does after loading its encoder; the peak growth of this process."""
    import ray
    import torch

    from pipeline.data.reader import split_shards
    from pipeline.evaluate.ray_features import SplitJob, write_split_features
    from pipeline.nets.backbones import Encoder
    from pipeline.params.methods import SmallCNNBackbone

    ray.init(address=os.environ["RAY_ADDRESS"], configure_logging=False)
    torch.manual_seed(0)
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=32), 3, [0.5] * 3, [0.25] * 3)
    sources = {split: split_shards(shard_dir, [split]) for split in ("train", "test")}
    baseline = status_bytes("VmHWM")
    splits = [SplitJob("encoder", shards, decoding, Path(out) / split)
              for split, (shards, _, decoding) in sources.items()]
    write_split_features({"encoder": encoder}, splits, BATCH)
    written = sum(path.stat().st_size for path in Path(out).rglob("*.npz"))
    return {"peak_growth": status_bytes("VmHWM") - baseline, "baseline": baseline,
            "feature_bytes_written": written, "feature_dim": encoder.feature_dim}


def measure(shard_dir: Path, address: str) -> dict[str, int]:
    """Run one driver in a fresh process joined to the cluster at `address`."""
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.features_memory", "--child", str(shard_dir),
             out], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT),
                                  "RAY_ADDRESS": address},
            capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"driver failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[4000, 16000, 64000],
                        help="images per split")
    parser.add_argument("--child", nargs=2, metavar=("SHARDS", "OUT"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_driver(*args.child)))
        return
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    address = ray.get_runtime_context().gcs_address
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for images in args.images:
                shard_dir = write_dataset(Path(tmp) / str(images), images)
                started = time.perf_counter()
                peaks = measure(shard_dir, address)
                row = {"images_per_split": images,
                       "split_decoded_mib": round(images * IMAGE_BYTES / MIB, 1),
                       "features_written_mib": round(peaks["feature_bytes_written"] / MIB, 2),
                       "driver_peak_growth_mib": round(peaks["peak_growth"] / MIB, 1),
                       "driver_baseline_mib": round(peaks["baseline"] / MIB, 1),
                       "seconds": round(time.perf_counter() - started, 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        ray.shutdown()
    RESULTS.write_text(json.dumps({
        "command": "python -m benchmarks.features_memory --images "
                   + " ".join(str(i) for i in args.images),
        "what": "peak RSS growth (VmHWM) of the features@ driver over its baseline (after "
                "ray.init, imports, encoder), extracting train and test by Ray tasks",
        "dataset": f"synthetic: train and test of random 32x32x3 uint8 images each, raw, "
                   f"{PER_SHARD} per shard",
        "settings": {"batch": BATCH, "encoder": "small_cnn width 32",
                     "feature_dim": peaks["feature_dim"], "cluster": "local Ray, 2 CPUs"},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"load average at end {os.getloadavg()[0]:.1f}",
        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

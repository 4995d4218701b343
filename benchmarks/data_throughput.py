"""Images per second delivered as augmented two-view batches, three ways.

(a) this pipeline: shards -> webdataset stream (W loader processes) -> batched views
(b) the usual torchvision ImageFolder + per-image transforms DataLoader (W processes)
(c) the upper bound: batched views of uint8 tensors already in memory
and, if kornia is importable, (c) with kornia's batched augmentations instead of ours.

The data is a generated ImageFolder of 32x32 RGB PNGs under /tmp (never committed).
Usage: python -m benchmarks.data_throughput [--images 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

from pipeline.data.loader import StreamLoader, StreamSpec
from pipeline.data.reader import split_shards
from pipeline.data.shards import write_shards
from pipeline.data.sources import load_source, make_splits
from pipeline.data.views import make_views
from pipeline.params.data import ImageFolderSource, SplitConfig
from pipeline.params.methods import ViewsConfig

RESULTS = Path(__file__).parent / "results" / "data_throughput.json"
CLASSES = 10
# SimCLR's CIFAR recipe, identical for every contender.
VIEWS = ViewsConfig(crop_scale=(0.2, 1.0), crop_ratio=(0.75, 1.3333), flip=0.5,
                    color_jitter=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                    grayscale=0.2)


def _write_png(args: tuple[Path, int]) -> None:
    """A smooth random image (low-frequency pattern plus noise): PNG-compresses like photos."""
    from PIL import Image

    path, seed = args
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((32, 32), Image.Resampling.BICUBIC))
    noise = rng.integers(-12, 13, image.shape)
    Image.fromarray(np.clip(image + noise, 0, 255).astype(np.uint8)).save(path)


def make_imagefolder(root: Path, count: int) -> Path:
    marker = root / f".complete-{count}"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    jobs = []
    for i in range(count):
        folder = root / "train" / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"{i:06d}.png", i))
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_png, jobs, chunksize=500)
    marker.touch()
    return root


def timed(batches: Iterator[int], warmup: int) -> float:
    """Images per second over the batches after `warmup` batches."""
    for _ in range(warmup):
        next(batches)
    started, images = time.perf_counter(), 0
    for size in batches:
        images += size
    return images / (time.perf_counter() - started)


def pipeline_batches(shard_dir: Path, batch: int, workers: int, steps: int,
                     augment: Callable) -> Iterator[int]:
    shards, _, decoding = split_shards(shard_dir, ["train"])
    loader = StreamLoader(StreamSpec(tuple(shards), decoding, batch, shuffle_buffer=5000),
                          workers)
    for images, _ in loader.epoch(0, steps):
        view1, _ = augment(images)
        yield len(view1)


class TwoViews:
    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image), self.transform(image)


def torchvision_batches(root: Path, batch: int, workers: int, steps: int) -> Iterator[int]:
    from torchvision import datasets
    from torchvision import transforms as T

    transform = T.Compose([
        T.RandomResizedCrop(32, scale=VIEWS.crop_scale, ratio=VIEWS.crop_ratio),
        T.RandomHorizontalFlip(VIEWS.flip),
        T.RandomApply([T.ColorJitter(VIEWS.brightness, VIEWS.contrast, VIEWS.saturation,
                                     VIEWS.hue)], p=VIEWS.color_jitter),
        T.RandomGrayscale(VIEWS.grayscale),
        T.ToTensor(),
    ])
    dataset = datasets.ImageFolder(str(root / "train"), transform=TwoViews(transform))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True,
                                         persistent_workers=True)
    done = 0
    while done < steps:
        for (view1, _), _ in loader:
            yield len(view1)
            done += 1
            if done == steps:
                return


def memory_batches(images: torch.Tensor, batch: int, steps: int, augment: Callable
                   ) -> Iterator[int]:
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(len(images), (batch,), generator=generator)
        view1, _ = augment(images[index])
        yield len(view1)


def ours() -> Callable:
    generator = torch.Generator().manual_seed(0)
    return lambda images: make_views(images, VIEWS, generator)


def kornia_views() -> Callable | None:
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    augment = K.AugmentationSequential(
        K.RandomResizedCrop((32, 32), scale=VIEWS.crop_scale, ratio=VIEWS.crop_ratio),
        K.RandomHorizontalFlip(p=VIEWS.flip),
        K.ColorJitter(VIEWS.brightness, VIEWS.contrast, VIEWS.saturation, VIEWS.hue,
                      p=VIEWS.color_jitter),
        K.RandomGrayscale(p=VIEWS.grayscale),
    )

    def views(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        floats = images.float().div_(255)
        return augment(floats), augment(floats)

    return views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="loader processes, (a) and (b)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=1.0, help="per contender and round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the main process (the same for all)")
    parser.add_argument("--root", type=Path, default=Path("/tmp/ssl-bench-imagefolder"))
    parser.add_argument("--kornia-path", type=str, default=None,
                        help="extra sys.path entry where kornia is installed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.kornia_path:
        sys.path.insert(0, args.kornia_path)
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    root = make_imagefolder(args.root, args.images)
    generate_seconds = time.perf_counter() - started
    source = load_source(ImageFolderSource(name="imagefolder", path=str(root)), image_size=32)
    shard_dir = args.root.with_name(args.root.name + "-shards")
    shutil.rmtree(shard_dir, ignore_errors=True)
    shard_dir.mkdir()
    started = time.perf_counter()
    manifest = write_shards(make_splits(source, SplitConfig(test_fraction=0.02)),
                            source.class_names, shard_dir, 1000, {"name": "imagefolder"},
                            decoding=source.decoding, storage=source.storage)
    shard_seconds = time.perf_counter() - started
    train_count = manifest["splits"]["train"]["count"]
    steps = int(args.epochs * train_count // args.batch)
    warmup = 3
    print(f"{args.images} PNGs, shards ({manifest['storage']}) in {shard_seconds:.1f}s; "
          f"{steps} batches of {args.batch} per contender", flush=True)

    from pipeline.data.reader import read_split

    in_memory = read_split(shard_dir, "train").images
    kornia = kornia_views()
    contenders: dict[str, Callable[[], Iterator[int]]] = {
        "a_pipeline_from_shards":
            lambda: pipeline_batches(shard_dir, args.batch, args.workers, steps, ours()),
        "b_torchvision_imagefolder":
            lambda: torchvision_batches(root, args.batch, args.workers, steps),
        "c_in_memory_views": lambda: memory_batches(in_memory, args.batch, steps, ours()),
    }
    if kornia is not None:
        contenders["c_in_memory_views_kornia"] = (
            lambda: memory_batches(in_memory, args.batch, steps, kornia))
    # Rounds interleave the contenders so load from other processes hits them alike.
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(args.repeats):
        for name, make in contenders.items():
            runs[name].append(timed(make(), warmup))
            print(f"round {round_index + 1} {name}: {runs[name][-1]:.0f} img/s", flush=True)
    results = {name: float(np.median(values)) for name, values in runs.items()}
    a, b, c = (results["a_pipeline_from_shards"], results["b_torchvision_imagefolder"],
               results["c_in_memory_views"])
    report = {
        "what": "source images per second delivered as augmented two-view batches "
                "(SimCLR CIFAR recipe), after 3 warm-up batches; median of interleaved rounds",
        "command": "python -m benchmarks.data_throughput " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
                    "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "device": "cpu"},
        "setup": {"images": args.images, "image_size": [32, 32, 3], "format": "png",
                  "loader_workers": args.workers, "batch_size": args.batch,
                  "batches_timed": steps - warmup, "rounds": args.repeats,
                  "shard_storage": manifest["storage"],
                  "generate_seconds": round(generate_seconds, 2),
                  "shard_seconds": round(shard_seconds, 2)},
        "images_per_second": {k: round(v, 1) for k, v in results.items()},
        "images_per_second_each_round": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "ratios": {"a_over_b": round(a / b, 2), "a_over_c": round(a / c, 3)},
        "targets": {"a_at_least_3x_b": a >= 3 * b, "a_at_least_80pct_of_c": a >= 0.8 * c},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios"]), json.dumps(report["targets"]))


if __name__ == "__main__":
    main()

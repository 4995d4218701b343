"""Peak memory of listing an image folder for `shard@`: what the driver holds per file.

`shard@` from an image folder (`datasets.<name>.source: {name: imagefolder}`) lists the
whole tree in one recursive listing and keeps every file's path, so that each shard is a
fixed, seeded slice of the sorted list. That is metadata, not images, but it grows with
the number of files. This measures it: trees of empty files named as ImageNet's are
(`train/n01440764/n01440764_10026.JPEG`, 1,000 class folders), listed by
`load_imagefolder` in a fresh process, locally and on moto's S3 server; the peak RSS
(VmHWM) growth over the process's mark once its modules are imported, per file, and where
the growth per added file leads at ImageNet's 1,281,167 training images.

Usage: python -m benchmarks.listing_memory [--out PATH]
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.record import run_benchmark
from benchmarks.stream_throughput import FAKE_AWS, free_port, start_server, stop_server

CLASSES = 1000
LOCAL_FILES = (100_000, 200_000, 400_000)
S3_FILES = (20_000, 40_000)  # moto takes a few ms per object written
IMAGENET_TRAIN = 1_281_167
BUCKET = "listing"


def file_names(count: int) -> list[str]:
    """`train/<class>/<class>_<index>.JPEG`, spread evenly over the class folders."""
    return [f"train/n{c:08d}/n{c:08d}_{i:06d}.JPEG"
            for c in range(CLASSES) for i in range(count // CLASSES)]


def list_once(location: str) -> None:
    """In a fresh process: list `location` as `shard@` does; print files and growth."""
    from benchmarks.stage_memory import status_bytes
    from pipeline.data.sources.imagefolder import image_extensions, load_imagefolder
    from pipeline.data.storage import _open, is_url
    from pipeline.params.data import ImageFolderSource

    image_extensions()  # PIL's plugins, imported once
    if is_url(location):
        _open(f"{location}/{file_names(CLASSES)[0]}").close()  # the S3 client
    baseline = status_bytes("VmHWM")
    data = load_imagefolder(ImageFolderSource(name="imagefolder", path=location), 224)
    growth = status_bytes("VmHWM") - baseline
    print(sum(len(split) for split in data.splits.values()), growth)


def measured(location: str, env: dict[str, str]) -> dict[str, float]:
    code = ("import sys; from benchmarks.listing_memory import list_once; "
            "list_once(sys.argv[1])")
    done = subprocess.run([sys.executable, "-c", code, location], env=env,
                          capture_output=True, text=True, check=True)
    files, growth = (int(value) for value in done.stdout.split())
    return {"files": files, "peak_growth_mib": round(growth / 2**20, 1),
            "bytes_per_file": round(growth / files)}


def extrapolated(rows: list[dict[str, float]]) -> dict[str, Any]:
    """The rows, the growth per added file between the two largest trees, and the peak
    that rate gives at ImageNet's size."""
    small, large = rows[-2], rows[-1]
    per_file = (large["peak_growth_mib"] - small["peak_growth_mib"]) * 2**20 / (
        large["files"] - small["files"])
    at_imagenet = large["peak_growth_mib"] + per_file * (IMAGENET_TRAIN - large["files"]) / 2**20
    return {"trees": rows, "added_bytes_per_file": round(per_file),
            "at_imagenet_mib": round(at_imagenet)}


def local_tree(root: Path, count: int) -> Path:
    for name in file_names(count):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return root


def put_empty(s3: Any, bucket: str, key: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=b"")


def measure(directory: Path) -> dict[str, Any]:
    import boto3

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    local = [measured(str(local_tree(directory / f"t{count}", count)), env)
             for count in LOCAL_FILES]
    on_s3 = []
    s3_port = free_port()
    env.update(FAKE_AWS, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{s3_port}")
    os.environ.update(env)
    server = start_server(["-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                          s3_port)
    try:
        s3 = boto3.client("s3")
        for count in S3_FILES:
            bucket = f"{BUCKET}-{count}"
            s3.create_bucket(Bucket=bucket)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(partial(put_empty, s3, bucket), file_names(count)))
            on_s3.append(measured(f"s3://{bucket}", env))
    finally:
        stop_server(server)
    return {"local": extrapolated(local), "s3_moto_server": extrapolated(on_s3)}


if __name__ == "__main__":
    run_benchmark("listing_memory", "trees of empty files named as ImageNet's (train/<class>/"
                  f"<class>_<index>.JPEG, {CLASSES} class folders): {LOCAL_FILES} files on "
                  f"local disk, {S3_FILES} on moto's S3 server; load_imagefolder in a fresh "
                  "process; peak_growth: VmHWM over the mark once its modules and client are "
                  "made; at_imagenet: the largest tree's growth plus added_bytes_per_file "
                  "(between the two largest trees) for each further file up to "
                  f"{IMAGENET_TRAIN:,}", measure)

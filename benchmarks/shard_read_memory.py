"""Peak memory of reading one large shard by URL: the shard once, not twice.

A reader holds one shard's bytes, hashed as they arrive, before it parses a sample
(`pipeline.data.storage.read_bytes`). This reads one object of random bytes (the size of
an ImageNet shard and more) from local disk, from `python -m http.server` and from moto's
S3 server, each server in its own process on 127.0.0.1, each read in a fresh Python
process: its peak RSS (VmHWM) growth over its high-water mark once the client is made.
A read that held the shard's pieces and then their join would grow by twice the object.

Usage: python -m benchmarks.shard_read_memory [--out PATH]
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.record import run_benchmark
from benchmarks.stage_memory import status_bytes
from benchmarks.stream_throughput import FAKE_AWS, free_port, start_server, stop_server

SIZES_MIB = (110, 384)  # an ImageNet shard of 1,000 JPEGs; a larger one
BUCKET = "shard-read"


def read_once(location: str, sha256: str) -> None:
    """In a fresh process: make the client, then read `location` once; print the growth."""
    from pipeline.data.storage import _open, is_url, read_bytes

    if is_url(location):
        _open(location).close()  # the client (and its imports) before the baseline
    baseline = status_bytes("VmHWM")
    data = read_bytes(location, sha256)
    growth = status_bytes("VmHWM") - baseline
    print(len(data), growth)


def measured(location: str, sha256: str, env: dict[str, str]) -> dict[str, float]:
    code = ("import sys; from benchmarks.shard_read_memory import read_once; "
            "read_once(sys.argv[1], sys.argv[2])")
    done = subprocess.run([sys.executable, "-c", code, location, sha256], env=env,
                          capture_output=True, text=True, check=True)
    size, growth = (int(value) for value in done.stdout.split())
    return {"object_mib": round(size / 2**20, 1), "peak_growth_mib": round(growth / 2**20, 1),
            "growth_over_object": round(growth / size, 3)}


def measure(directory: Path) -> dict[str, Any]:
    import boto3

    www = directory / "www"
    www.mkdir()
    s3_port, http_port = free_port(), free_port()
    env = {**os.environ, **FAKE_AWS, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_port}",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    os.environ.update(env)
    servers = [start_server(["-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                            s3_port),
               start_server(["-m", "http.server", str(http_port), "--bind", "127.0.0.1",
                             "--directory", str(www)], http_port)]
    results: dict[str, Any] = {}
    try:
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        for size in SIZES_MIB:
            name = f"shard-{size}.bin"
            payload = os.urandom(size << 20)
            sha256 = hashlib.sha256(payload).hexdigest()
            (www / name).write_bytes(payload)
            s3.put_object(Bucket=BUCKET, Key=name, Body=payload)
            del payload
            results[f"{size}_mib"] = {
                "local_file": measured(str(www / name), sha256, env),
                "http_server": measured(f"http://127.0.0.1:{http_port}/{name}", sha256, env),
                "s3_moto_server": measured(f"s3://{BUCKET}/{name}", sha256, env)}
            (www / name).unlink()
    finally:
        for server in servers:
            stop_server(server)
    return {"reads": results}


if __name__ == "__main__":
    run_benchmark("shard_read_memory", "one object of random bytes per size "
                  f"({', '.join(map(str, SIZES_MIB))} MiB), sha256 checked, read once per "
                  "process; peak_growth: VmHWM over the process's mark once its client is made",
                  measure)

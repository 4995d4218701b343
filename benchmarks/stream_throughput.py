"""Streaming throughput by where the shards are: local files, a local S3-compatible server
(moto, in its own process on 127.0.0.1), the same server behind the fault-injecting proxy
(benchmarks/fault_proxy.py, its own process) without faults and with a fixed schedule of
503s, resets and stalls, and a plain `python -m http.server`.

The same shards (random 32x32 RGB images, stored raw, 1,000 per shard) and the same loader
settings for every contender: pipeline.data.loader's StreamLoader with W loader processes,
a 5,000-sample shuffle buffer, batches of 256, every shard's sha256 checked; images per
second after 3 warm-up batches, the median of interleaved rounds. No augmentation: this
measures delivery, not views (benchmarks/data_throughput.py does those). On one machine
the servers compete with the loader for the same cores; across a network, latency and
bandwidth would add to what is measured here.

Through the faulty proxy every transient failure is retried by pipeline.data.storage
(backoff with jitter, `READS` below) and counted; the count per round is in the results,
with the requests each proxy saw per method (what the object store would bill).

Usage: python -m benchmarks.stream_throughput [--images 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.data.loader import StreamLoader, StreamSpec
from pipeline.data.publish import publish_shards
from pipeline.data.reader import split_shards
from pipeline.data.shards import write_shards
from pipeline.data.sources import ImageSet
from pipeline.data.storage import ReadPolicy, configure_reads, forget_clients, read_retries

RESULTS = Path(__file__).parent / "results" / "stream_throughput.json"
# per request method and path, cyclically: a shard's HEAD and GET each fail one time in
# three, in turn with 503 SlowDown, a reset mid-answer and a stall past the read timeout
FAULT_SCHEDULE = ("ok", "503", "ok", "ok", "reset", "ok", "ok", "stall", "ok")
STALL_S = 3.0
READS = ReadPolicy(attempts=6, backoff_s=0.1, backoff_max_s=2.0, timeout_s=1.0)
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "benchmark", "AWS_SECRET_ACCESS_KEY": "benchmark",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def start_server(args: list[str], port: int, keep_output: bool = False) -> subprocess.Popen:
    """A server in its own process; with `keep_output`, its stdout is kept (the proxies
    print their counts when stopped)."""
    process = subprocess.Popen([sys.executable, *args],
                               stdout=subprocess.PIPE if keep_output else subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, text=True)
    wait_for_port(port, process)
    return process


def stop_server(process: subprocess.Popen) -> str:
    """Stop a server (SIGTERM); the last line it printed."""
    process.terminate()
    out, _ = process.communicate(timeout=30)
    lines = (out or "").strip().splitlines()
    return lines[-1] if lines else ""


def per_round(summary: dict[str, dict[str, int]], rounds: int) -> dict[str, dict[str, float]]:
    """A proxy's counts over all rounds, per round."""
    return {kind: {key: round(count / rounds, 1) for key, count in counts.items()}
            for kind, counts in summary.items()}


def write_random_shards(out: Path, count: int) -> dict:
    images = np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(count, dtype=np.int64) % 10
    data = ImageSet(images, labels, np.arange(count, dtype=np.int64))
    return write_shards({"train": data}, [str(i) for i in range(10)], out, 1000,
                        {"name": "random"})


def timed(location: str, batch: int, workers: int, steps: int, endpoint: str,
          warmup: int = 3) -> float:
    """Images per second delivered by a fresh StreamLoader over `location` (S3 URLs reach
    `endpoint`)."""
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    forget_clients()
    shards, _, decoding = split_shards(location, ["train"])
    loader = StreamLoader(StreamSpec(tuple(shards), decoding, batch, shuffle_buffer=5000),
                          workers)
    batches: Iterator = loader.epoch(0, steps + warmup)
    for _ in range(warmup):
        next(batches)
    started, images = time.perf_counter(), 0
    for images_batch, _ in batches:
        images += len(images_batch)
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="loader processes")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=1.0, help="per contender and round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        shard_dir, www = Path(tmp) / "shards", Path(tmp) / "www"
        shard_dir.mkdir()
        manifest = write_random_shards(shard_dir, args.images)
        shard_megabytes = sum(path.stat().st_size for path in shard_dir.glob("*.tar")) / 1e6
        s3_port, http_port, clean_port, faulty_port = (free_port() for _ in range(4))
        moto_url = f"http://127.0.0.1:{s3_port}"
        os.environ.update(FAKE_AWS, AWS_ENDPOINT_URL_S3=moto_url)
        configure_reads(READS)
        proxy = ["-m", "benchmarks.fault_proxy", moto_url]
        servers = [start_server(["-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                                s3_port),
                   start_server(["-m", "http.server", str(http_port), "--bind", "127.0.0.1",
                                 "--directory", str(www)], http_port),
                   start_server([*proxy, str(clean_port)], clean_port, keep_output=True),
                   start_server([*proxy, str(faulty_port), "--schedule",
                                 ",".join(FAULT_SCHEDULE), "--stall-s", str(STALL_S)],
                                faulty_port, keep_output=True)]
        try:
            import boto3

            boto3.client("s3").create_bucket(Bucket="bench")
            started = time.perf_counter()
            publish_shards(shard_dir, "s3://bench/shards")
            publish_seconds = time.perf_counter() - started
            publish_shards(shard_dir, str(www / "shards"))
            s3 = "s3://bench/shards"
            locations = {  # name -> (location, the S3 endpoint it reaches)
                "local_files": (str(shard_dir), moto_url),
                "s3_moto_server": (s3, moto_url),
                "s3_through_proxy_no_faults": (s3, f"http://127.0.0.1:{clean_port}"),
                "s3_through_fault_proxy": (s3, f"http://127.0.0.1:{faulty_port}"),
                "http_server": (f"http://127.0.0.1:{http_port}/shards", moto_url)}
            steps = int(args.epochs * args.images // args.batch) - 3
            runs: dict[str, list[float]] = {name: [] for name in locations}
            retries: dict[str, list[int]] = {name: [] for name in locations}
            for round_index in range(args.repeats):
                for name, (location, endpoint) in locations.items():
                    before = read_retries()
                    runs[name].append(timed(location, args.batch, args.workers, steps,
                                            endpoint))
                    retries[name].append(read_retries() - before)
                    print(f"round {round_index + 1} {name}: {runs[name][-1]:.0f} img/s, "
                          f"{retries[name][-1]} retries", flush=True)
        finally:
            printed = [stop_server(server) for server in servers]
    proxy_counts = {name: per_round(json.loads(line), args.repeats) for name, line
                    in zip(("s3_through_proxy_no_faults", "s3_through_fault_proxy"),
                           printed[2:], strict=True)}

    results = {name: float(np.median(values)) for name, values in runs.items()}
    import moto
    import pyarrow

    report = {
        "what": "images per second delivered as uint8 batches by the streaming loader (no "
                "augmentation), after 3 warm-up batches; median of interleaved rounds; "
                "servers on the same machine (127.0.0.1), in their own processes",
        "base_dataset": f"{args.images} random 32x32x3 uint8 images (numpy seed 0), labels "
                        "i % 10, stored raw, 1,000 per shard: the same shards for every "
                        "contender",
        "fault_schedule": {
            "proxy": "benchmarks/fault_proxy.py in front of the moto S3 server",
            "actions_per_request_method_and_path": list(FAULT_SCHEDULE),
            "stall_seconds": STALL_S,
            "meaning": "503: S3 SlowDown; reset: half the answer, then a TCP reset; stall: "
                       "no answer for stall_seconds, then the connection closed"},
        "read_policy": {"attempts": READS.attempts, "backoff_s": READS.backoff_s,
                        "backoff_max_s": READS.backoff_max_s, "timeout_s": READS.timeout_s},
        "command": "python -m benchmarks.stream_throughput " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
                    "python": platform.python_version(), "torch": torch.__version__,
                    "pyarrow": pyarrow.__version__, "moto": moto.__version__,
                    "device": "cpu"},
        "setup": {"images": args.images, "image_size": [32, 32, 3], "storage": "raw",
                  "samples_per_shard": 1000, "shards": len(manifest["splits"]["train"]
                                                           ["shards"]),
                  "shard_megabytes": round(shard_megabytes, 1),
                  "loader_workers": args.workers,
                  "batch_size": args.batch, "shuffle_buffer": 5000,
                  "batches_timed": steps, "rounds": args.repeats,
                  "publish_to_s3_seconds": round(publish_seconds, 2)},
        "images_per_second": {k: round(v, 1) for k, v in results.items()},
        "images_per_second_each_round": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "read_retries_each_round": retries,
        "proxy_counts_per_round": proxy_counts,
        "proxy_counts_meaning": "requests reaching each proxy, per method, and the faults "
                                "it injected, over all rounds divided by the rounds: one "
                                "round streams steps + 3 warm-up batches",
        "ratios_to_local_files": {k: round(v / results["local_files"], 3)
                                  for k, v in results.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["images_per_second"]), json.dumps(report["ratios_to_local_files"]))


if __name__ == "__main__":
    main()

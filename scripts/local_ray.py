"""Hold one local Ray cluster open while `scripts/repro.sh` runs `dvc repro`.

Each pretrain and features stage would otherwise start its own cluster and stop it again
(about 7 s per run on a 2-core machine); with `RAY_ADDRESS` set, `ray.address: local`
joins this one.

    python scripts/local_ray.py ENV_FILE

writes `RAY_ADDRESS=...` (and `RAY_AUTH_MODE=token` when Ray enabled token authentication,
so that joining processes present the token in ~/.ray/auth_token) to ENV_FILE once the
cluster is up, and keeps it up until SIGTERM or SIGINT, on which it is shut down.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from pipeline.cluster import init_ray
from pipeline.params.ray import RayConfig


def main() -> None:
    import ray

    env_file = Path(sys.argv[1])
    init_ray(RayConfig(address="local"))
    lines = [f"RAY_ADDRESS={ray.get_runtime_context().gcs_address}"]
    if os.environ.get("RAY_AUTH_MODE"):
        lines.append(f"RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}")
    env_file.write_text("\n".join(lines) + "\n")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))  # exit runs ray's shutdown hook
    while True:
        signal.pause()


if __name__ == "__main__":
    main()

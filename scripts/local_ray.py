"""Hold one local Ray cluster open while `scripts/repro.sh` runs `dvc repro`.

Each pretrain stage would otherwise start its own cluster and stop it again (about 7 s per
run on a 2-core machine); with `RAY_ADDRESS` set, `ray.address: local` joins this one.

    python scripts/local_ray.py ADDRESS_FILE

writes the cluster's address to ADDRESS_FILE once it is up and keeps it up until SIGTERM
or SIGINT, on which the cluster is shut down.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from pipeline.params import RayConfig
from pipeline.train.launcher import init_ray


def main() -> None:
    import ray

    address_file = Path(sys.argv[1])
    init_ray(RayConfig(address="local"))
    address_file.write_text(ray.get_runtime_context().gcs_address)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))  # exit runs ray's shutdown hook
    while True:
        signal.pause()


if __name__ == "__main__":
    main()

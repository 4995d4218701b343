"""Hold one local Ray cluster open while `scripts/repro.sh` runs `dvc repro`.

Each shard, pretrain and features stage would otherwise start its own cluster and stop it
again (about 7 s per run on a 2-core machine); with `RAY_ADDRESS` set, `ray.address: local`
joins this one.

    python scripts/local_ray.py ENV_FILE

writes `RAY_ADDRESS=...` (and `RAY_AUTH_MODE=token` when Ray enabled token authentication,
so that joining processes present the token in ~/.ray/auth_token) to ENV_FILE once the
cluster is up, and keeps it up until SIGTERM or SIGINT, on which it is shut down. The
first of them only sets a flag and makes both ignored from then on, so neither the Ctrl-C
that the whole process group gets nor the SIGTERM that repro.sh sends on exit can raise
inside Ray's start or shutdown (Ray's own SIGTERM handler, `sys.exit`, did: a traceback
from its shutdown hook).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from pipeline.cluster import init_ray
from pipeline.params.ray import RayConfig

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def catch_stop_signals(stop: threading.Event) -> None:
    """On SIGTERM or SIGINT, set `stop` and ignore both from then on."""
    def on_signal(*_) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        stop.set()

    if not stop.is_set():
        for signum in STOP_SIGNALS:
            signal.signal(signum, on_signal)


def main() -> None:
    import ray

    env_file = Path(sys.argv[1])
    stop = threading.Event()
    catch_stop_signals(stop)
    init_ray(RayConfig(address="local"))
    catch_stop_signals(stop)  # again: ray.init installs its own SIGTERM handler
    lines = [f"RAY_ADDRESS={ray.get_runtime_context().gcs_address}"]
    if os.environ.get("RAY_AUTH_MODE"):
        lines.append(f"RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}")
    env_file.write_text("\n".join(lines) + "\n")
    while not stop.wait(timeout=1.0):
        pass
    ray.shutdown()


if __name__ == "__main__":
    main()

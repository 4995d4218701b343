"""Start or join the Ray cluster the heavy stages (pretraining, feature extraction,
sharding) run on, and run tasks on it in a fixed order.

`ray.address: local` joins the cluster `RAY_ADDRESS` names when it is set (`scripts/repro.sh`
holds one open for a whole `dvc repro`) and starts an embedded one otherwise; any other
address is a cluster to join, to which the driver ships its `pipeline` package.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserError, one_line
from pipeline.params.ray import RayConfig

# Worker prints reach the driver once (not twice through Train's print patch), and Ray
# Train's controller polls workers often enough that a report costs ~0.25 s, not ~2 s.
RAY_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}
# A single machine has no spot nodes to be reclaimed: Train's preemption watcher would only
# cost every run one more actor process (and an error-level log line at its start).
LOCAL_RAY_ENV = {**RAY_ENV, "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
RAY_LOG_LEVEL = "ERROR"
# Ray Client's per-session server sometimes dies as the proxy forks it (a gRPC fork race,
# ray-project/ray#63202, a few percent of connections): the connection is then retried.
CLIENT_CONNECT_ATTEMPTS = 3
# Ray retries a GCS address where nothing listens for minutes; a TCP probe answers in this.
CONNECT_TIMEOUT_S = 10


def init_ray(ray_cfg: RayConfig, num_cpus: int | None = None) -> None:
    """Start an embedded cluster (`local`) or join one; a no-op when already connected.

    `local` joins the cluster `RAY_ADDRESS` names when it is set (as Ray's own `ray.init`
    does): `scripts/repro.sh` holds one open for all the Ray stages of a `dvc repro`.
    """
    import ray

    if ray.is_initialized():
        return
    env = LOCAL_RAY_ENV if ray_cfg.address == "local" else RAY_ENV
    # The job's processes (this driver included) log errors only: Ray's notices (token
    # authentication, cluster address, the warnings of Train's helper actors on a loaded
    # machine) stay off the console, and worker output is forwarded without a pid prefix.
    quiet = {"configure_logging": False,
             "logging_config": ray.LoggingConfig(log_level=RAY_LOG_LEVEL)}
    joined = os.environ.get("RAY_ADDRESS") if ray_cfg.address == "local" else ray_cfg.address
    if joined:
        runtime_env: dict[str, Any] = {"env_vars": {**env, **own_cluster(joined)}}
        if ray_cfg.address != "local":
            # Workers on other machines import this driver's `pipeline` (shipped with the
            # job), not whatever version their image holds; a path, as Ray Client pickles it.
            runtime_env["py_modules"] = [str(Path(__file__).resolve().parent)]
        key = "ray.address" if ray_cfg.address != "local" else "RAY_ADDRESS (ray.address: local)"
        connect(joined, runtime_env, quiet, key)
    else:
        port = free_port()  # the dashboard (on localhost) serves the state API Train polls
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=True,
                 dashboard_host="127.0.0.1", dashboard_port=port,
                 runtime_env={"env_vars": {**env, **own_cluster(f"http://127.0.0.1:{port}")}},
                 **quiet)


def connect(address: str, runtime_env: dict[str, Any], options: dict[str, Any],
            key: str = "ray.address") -> None:
    """Join a running cluster; a Ray Client session whose server failed to start is
    retried, at most CLIENT_CONNECT_ATTEMPTS times in all. A cluster that cannot be
    joined is the error of `key` (where the address came from), in one line."""
    import ray

    check_listening(address, key)
    attempts = CLIENT_CONNECT_ATTEMPTS if address.startswith("ray://") else 1
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():  # its timeout warning: the error says it in one line
                warnings.simplefilter("ignore", UserWarning)
                ray.init(address=address, runtime_env=runtime_env, **options)
            return
        except ConnectionAbortedError as error:
            ray.shutdown()
            if attempt == attempts:
                raise UserError(f"{key}: the Ray Client server at {address} failed to "
                                f"start {attempts} times ({one_line(str(error))})") from None
            time.sleep(attempt)
        except ConnectionError as error:
            ray.shutdown()
            raise UserError(f"{key}: cannot join the Ray cluster at {address} "
                            f"({one_line(str(error))})") from None


def check_listening(address: str, key: str) -> None:
    """Fail in seconds, in one line, where nothing accepts connections at a `host:port`
    or `ray://host:port` address (Ray itself would wait on it for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or "/" in host:  # `auto`, or not an address to probe
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise UserError(f"{key}: cannot join the Ray cluster at {address} (nothing answers "
                        f"there: {one_line(str(error) or type(error).__name__)})") from None


def own_cluster(address: str) -> dict[str, str]:
    """Environment that points the state API of the job's processes at this cluster.

    Ray Train's placement-group cleaner looks its controller up through the state API,
    which otherwise searches the machine for a cluster and fails (a thread traceback on
    the console) when it finds several.
    """
    if address.startswith("http://"):
        return {"RAY_API_SERVER_ADDRESS": address}
    if "://" in address or address == "auto":  # a Ray Client or an auto-detected address
        return {}
    return {"RAY_ADDRESS": address}


def free_port() -> int:
    """A TCP port free on localhost now (Ray binds the dashboard to it moments later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


TASK_RETRIES = 3  # re-runs of a task whose worker or node died (not of user errors)


def ordered_results(function: Callable[..., Any], calls: Iterable[tuple], window: int,
                    num_cpus: float = 1, num_gpus: float = 0) -> Iterator[Any]:
    """`function(*call)` for each call, as Ray tasks on the connected cluster, yielded in
    the order of `calls` with at most `window` submitted and not yet taken (the object
    store, and the caller, hold a bounded number of results).

    A task lost with its worker or node is re-run (Ray's task retries: the function must
    be a pure function of its arguments); a UserError raised inside a task is raised here
    as itself, so a stage ends with its one line.
    """
    import ray

    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=TASK_RETRIES,
                      retry_exceptions=False)(function)
    pending: deque[Any] = deque()
    queue = iter(calls)
    while True:
        for call in queue:
            pending.append(task.remote(*call))
            if len(pending) >= window:
                break
        if not pending:
            return
        yield _take(pending.popleft())


def _take(ref) -> Any:
    """A task's result; its user error re-raised as itself (one line, no traceback)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, UserError):
            # The stage ends on this line: other tasks' errors, dropped unread with their
            # references, are not printed after it (Ray reads this when it would print).
            os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
            raise error.cause from None
        raise


def cluster_slots(cpus: float = 1, gpus: float = 0) -> int:
    """How many tasks of `cpus` CPUs (or `gpus` GPUs) the connected cluster runs at once."""
    import ray

    total = ray.cluster_resources()
    return int(total.get("GPU", 0) / gpus if gpus else total.get("CPU", 0) / cpus)

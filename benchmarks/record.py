"""What every benchmark shares: the machine it ran on, a simulated multi-node Ray cluster,
and writing its results file."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """The machine a benchmark runs on, with its load when it starts (figures taken
    under load say so)."""
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "load_average_at_start": os.getloadavg()[0]}


@contextmanager
def simulated_cluster(nodes: int) -> Iterator[None]:
    """A Ray cluster of `nodes` 1-CPU worker nodes and a head that runs nothing, on this
    machine (`ray.cluster_utils`), with this process connected to it."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.pop("RAY_ADDRESS", None)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                            "include_dashboard": False})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, configure_logging=False)
        yield
    finally:
        ray.shutdown()
        cluster.shutdown()


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Record the load at the end, write `path` and print the results."""
    results.setdefault("machine", machine())["load_average_at_end"] = os.getloadavg()[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))

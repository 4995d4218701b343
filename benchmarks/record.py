"""What every benchmark shares: the machine it ran on, a simulated multi-node Ray cluster,
scaling over its nodes, the command line, and writing its results file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


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


def scaling(measure: Callable[[int], dict[str, Any]], unit: str) -> dict[str, Any]:
    """`measure(nodes)` (with `images_per_second`) on 1 and 2 nodes, as `ray_<n>_<unit>`,
    and the speedup of 2 over 1."""
    results = {f"ray_{nodes}_{unit}": measure(nodes) for nodes in (1, 2)}
    results[f"speedup_2_over_1_{unit}"] = (results[f"ray_2_{unit}"]["images_per_second"]
                                          / results[f"ray_1_{unit}"]["images_per_second"])
    return results


def run_benchmark(name: str, workload: str, measure: Callable[[Path], dict[str, Any]]
                  ) -> None:
    """The command line of `python -m benchmarks.<name> [--out PATH]`: the results of
    `measure(a temporary directory)`, with the command, the machine and the workload,
    written to benchmarks/results/<name>.json unless --out says otherwise."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json")
    args = parser.parse_args()
    results = {"command": f"python -m benchmarks.{name}", "machine": machine(),
               "workload": workload}
    with tempfile.TemporaryDirectory() as directory:
        results.update(measure(Path(directory)))
    write_results(args.out, results)

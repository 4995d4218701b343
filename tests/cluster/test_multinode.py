"""A real multi-node Ray cluster on one machine, shards and checkpoints on a real
S3-compatible server (moto on 127.0.0.1).

`ray.cluster_utils.Cluster` starts, once for this module, a head node without CPUs (no
training worker lands there; it holds the Train controllers, the dashboard on 127.0.0.1
and the Ray Client server) and three worker nodes of one CPU each, every one with its own
raylet and object store: two training workers need two nodes, and one node is spare. The
drivers are real stage processes or `dvc repro`, as on a cluster; shards are published to
the S3 server and `ray.storage_path` is a bucket there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
import torch
import yaml

from pipeline.data.publish import publish_shards
from pipeline.data.shards import write_shards
from pipeline.data.sources import ImageSet
from pipeline.nets.backbones import load_encoder
from pipeline.params.schema import load_params
from pipeline.params.training import RunConfig
from pipeline.train.launcher import run_id
from stages import params as params_stage

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "cluster-tests"
WORKER_NODES = 3
# deterministic views and per-sample norms: W workers must take exactly one worker's step
STEP_RUN = {
    "dataset": "digits",
    "backbone": {"name": "small_cnn", "width": 4, "norm": "group"},
    "method": {"name": "simclr", "projector": {"hidden_dim": 32, "output_dim": 16,
                                              "batch_norm": False}},
    "views": {"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "color_jitter": 0.0,
              "grayscale": 0.0},
    "train": {"epochs": 1, "batch_size": 512,
              "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0,
                            "schedule": "constant"}},
}
# a short run that checkpoints every epoch, streaming its shards from the S3 server
TRAIN_RUN = {
    "dataset": "digits",
    "backbone": {"name": "small_cnn", "width": 4, "norm": "group"},
    "method": {"name": "simclr", "projector": {"hidden_dim": 32, "output_dim": 16}},
    "train": {"epochs": 10, "batch_size": 128, "checkpoint_every_epochs": 1},
    "data": {"loader": "stream", "workers": 0, "shuffle_buffer": 200},
}
SEED = 3  # the one seed of every run here (`seeds: [3]`)
TRAINED = RunConfig.model_validate({**TRAIN_RUN, "seed": SEED})  # as the stage trains it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(s3_server):
    """The head and three 1-CPU worker nodes; their processes inherit the S3 settings."""
    from ray.cluster_utils import Cluster

    client_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": free_port(), "ray_client_server_port": client_port})
    try:
        for _ in range(WORKER_NODES):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield SimpleNamespace(nodes=cluster, address=cluster.address,
                              client_address=f"ray://127.0.0.1:{client_port}")
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def s3_bucket(s3_server) -> str:
    """The bucket of this module's shards and checkpoints."""
    s3_server.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture(scope="module")
def shards_url(s3_bucket, digits_shards) -> str:
    url = f"s3://{s3_bucket}/digits"
    publish_shards(digits_shards, url)
    return url


def driver_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("DVC_EXP_NAME", None)
    if "RAY_ADDRESS" not in extra:
        env.pop("RAY_ADDRESS", None)
    return env


def write_params(project: Path, run: dict, ray: dict, publish_url: str) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"]["digits"]["publish"] = {"url": publish_url}
    params["runs"] = {"tiny": run}
    params["seeds"] = [SEED]
    params["report"] = {"control": [], "supervised": [], "comparisons": []}
    params["ray"].update(cpus_per_worker=1, **ray)
    params["evaluate"]["geometry"].update(map_method="pca", max_points=300)
    params["evaluate"]["linear"].update(weight_decays=[1e-4], max_iter=100)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage_project(path: Path, digits_shards: Path, run: dict, ray: dict, url: str) -> Path:
    """A directory where `python -m stages.pretrain tiny` reads the published shards."""
    (path / "data" / "shards").mkdir(parents=True)
    (path / "data" / "shards" / "digits").symlink_to(digits_shards)  # the local manifest
    write_params(path, run, ray, url)
    with contextlib.chdir(path):  # resolved/: what the stage reads
        params_stage.main(load_params("params.yaml"))
    return path


def start_pretrain(project: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.pretrain", "tiny"], cwd=project,
                            env=driver_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def train_worker_nodes(cluster, driver_pid: int, state: str | None = None) -> list[str]:
    """Node ids of the Ray Train workers of the job whose driver is `driver_pid`."""
    from ray.util.state import list_actors, list_jobs

    jobs = [job.job_id for job in list_jobs(address=cluster.address)
            if job.driver_info and job.driver_info.pid == str(driver_pid)]
    assert len(jobs) == 1, jobs
    filters = [("class_name", "=", "RayTrainWorker"), ("job_id", "=", jobs[0])]
    if state:
        filters.append(("state", "=", state))
    return [actor.node_id for actor in list_actors(address=cluster.address, filters=filters)]


def registered_epochs(s3_server, prefix: str) -> list[int]:
    """Checkpoints Ray Train has registered under `prefix` in the bucket (what a resumed
    run starts from), read from the snapshot its controller writes there."""
    try:
        body = s3_server.get_object(Bucket=BUCKET, Key=f"{prefix}/"
                                    "checkpoint_manager_snapshot.json")["Body"].read()
        snapshot = json.loads(body)
    except (s3_server.exceptions.NoSuchKey, json.JSONDecodeError):
        return []
    return [int(result["checkpoint_dir_name"].removeprefix("epoch_"))
            for result in snapshot["checkpoint_results"]]


def wait_for_checkpoint(s3_server, prefix: str, process: subprocess.Popen) -> list[int]:
    deadline = time.monotonic() + 300
    while not (epochs := registered_epochs(s3_server, prefix)):
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint"
        time.sleep(0.1)
    return epochs


def test_two_workers_on_two_nodes_take_the_same_first_step_as_one_worker(
        cluster, shards_url, digits_shards, tmp_path):
    """Memory loader, shards read by URL on each node; 1 and 2 workers run concurrently."""
    drivers = {}
    for workers in (1, 2):
        ray = {"address": cluster.address, "num_workers": workers,
               "storage_path": f"s3://{BUCKET}/first-step-{workers}"}
        project = stage_project(tmp_path / str(workers), digits_shards, STEP_RUN, ray,
                                shards_url)
        drivers[workers] = start_pretrain(project)
    for driver in drivers.values():
        finish(driver)
    one, two = (load_encoder(tmp_path / str(w) / f"models/tiny/seed_{SEED}/encoder.pt")
                .state_dict() for w in (1, 2))
    assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)
    nodes = train_worker_nodes(cluster, drivers[2].pid)
    worker_nodes = {node.node_id for node in cluster.nodes.worker_nodes}
    assert len(set(nodes)) == 2 and set(nodes) <= worker_nodes


def test_streaming_readers_split_the_shards_per_node_and_loader(cluster, s3_server, tmp_path):
    """8 shards of 25 numbered images, 2 nodes x 2 loader processes: one epoch of batches
    of 10 per rank reads every image exactly once (each reader its own 2 shards)."""
    images = np.repeat(np.arange(200, dtype=np.uint8), 16).reshape(200, 4, 4, 1)
    labels = np.arange(200, dtype=np.int64)
    write_shards({"train": ImageSet(images, labels, labels.copy())},
                 [str(i) for i in range(200)], tmp_path, 25, {"name": "numbers"})
    s3_server.create_bucket(Bucket="numbers")
    url = "s3://numbers/train"
    publish_shards(tmp_path, url)
    nodes = sorted(node.node_id for node in cluster.nodes.worker_nodes)[:2]
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests/cluster/stream_split_driver.py"), cluster.address,
         url, ",".join(nodes)], env=driver_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    ranks = json.loads(result.stdout.strip().splitlines()[-1])
    assert [node for node, _ in ranks] == nodes
    assert all(len(batches) == 10 for _, batches in ranks)
    seen = [label for _, batches in ranks for batch in batches for label in batch]
    assert sorted(seen) == list(range(200))


def git_project(path: Path, ray: dict, url: str, run: dict = TRAIN_RUN) -> Path:
    """A git + DVC repository with this project's files and one short streamed run."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in files.split():  # the default pipeline only: studies/ are pipelines of their own
        if (ROOT / name).is_file() and not name.startswith("studies/"):
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, path / name)
    write_params(path, run, ray, url)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit",
                     "-qm", "init"]):
        subprocess.run(command, cwd=path, check=True)
    return path


def dvc(project: Path, *args: str, **env: str) -> subprocess.Popen:
    env = driver_env(**env)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return subprocess.Popen(["dvc", *args], cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def assert_pipeline_complete(project: Path) -> None:
    metrics = json.loads((project / "results/pretrain/tiny.json").read_text())
    assert metrics[f"seed_{SEED}"]["epochs"] == 10
    record = json.loads((project / "data/published/digits.json").read_text())
    assert record["url"].startswith(f"s3://{BUCKET}/") and record["files"]
    for stage in ("probe", "transfer", "geometry"):
        assert (project / f"results/{stage}/tiny.json").is_file()
    assert (project / "reports/summary.md").is_file()
    status = dvc(project, "status")
    assert "up to date" in finish(status)


def test_dvc_repro_on_a_cluster_node_joins_it_and_resumes_a_killed_stage(
        cluster, s3_server, s3_bucket, tmp_path):
    """(a) `ray.address: auto` (RAY_ADDRESS names the cluster, as on its head node)."""
    ray = {"address": "auto", "num_workers": 2, "storage_path": f"s3://{BUCKET}/a-checkpoints"}
    project = git_project(tmp_path, ray, f"s3://{BUCKET}/a/digits")
    repro = dvc(project, "repro", RAY_ADDRESS=cluster.address)
    prefix = f"a-checkpoints/{run_id('tiny', TRAINED)}"
    registered = wait_for_checkpoint(s3_server, prefix, repro)
    # The driver dies: its Ray job (trainer, workers) ends. DVC may run the command through
    # a shell that does not exec it, so the Python driver is the one to kill, not the shell.
    stage = next(p for p in psutil.Process(repro.pid).children(recursive=True)
                 if p.cmdline()[1:3] == ["-m", "stages.pretrain"])
    stage.send_signal(signal.SIGKILL)
    output, _ = repro.communicate(timeout=600)
    assert repro.returncode != 0 and not (project / "models").exists(), output
    output = finish(dvc(project, "repro", RAY_ADDRESS=cluster.address))
    resumed_from = int(output.split("resumed from epoch ")[1].split()[0])
    assert max(registered) <= resumed_from < 10, output
    assert_pipeline_complete(project)


def shard_task_nodes(cluster, count: int) -> list[str]:
    """The nodes that ran the `count` shard-writing tasks of the latest job that ran any
    (Ray's state API, whose task events arrive within seconds)."""
    from ray.util.state import list_tasks

    filters = [("func_or_class_name", "=", "write_on_worker"), ("state", "=", "FINISHED")]
    deadline = time.monotonic() + 30
    while True:
        tasks = list_tasks(address=cluster.address, filters=filters, detail=True)
        job = max(tasks, key=lambda task: task.creation_time_ms or 0).job_id if tasks else None
        latest = [task for task in tasks if task.job_id == job]
        if len(latest) == count or time.monotonic() > deadline:
            assert len(latest) == count, latest
            return [task.node_id for task in latest]
        time.sleep(0.5)


def shard_files(project: Path) -> list[Path]:
    return [path for path in project.rglob("*.tar") if ".dvc" not in path.parts]


def test_a_workstation_holding_only_the_records_runs_every_later_stage_over_ray_client(
        cluster, s3_server, s3_bucket, digits_shards, tmp_path):
    """No copy on the driver, (b) over Ray Client (`ray.address: ray://head:10001`):
    shard@'s Ray tasks, on two nodes or more, write straight to the bucket the same bytes
    as one local process, and the workstation keeps the manifest; a second clone that
    pulls only the records (manifest, publish record) from a DVC remote runs pretrain (2
    workers) to report through `dvc repro` without re-sharding and without a shard file,
    every output in its working copy; new data (a new manifest) make DVC rerun what reads
    them."""
    ray = {"address": cluster.client_address, "num_workers": 2,
           "storage_path": f"s3://{BUCKET}/c-checkpoints"}
    run = {**TRAIN_RUN, "train": {"epochs": 1, "batch_size": 128}}
    url = f"s3://{BUCKET}/c/digits"
    sharding = git_project(tmp_path / "sharding", ray, url, run)
    finish(dvc(sharding, "repro", "publish@digits"))
    assert [path.name for path in (sharding / "data/shards/digits").iterdir()] == [
        "manifest.json"] and not shard_files(sharding)
    listed = s3_server.list_objects_v2(Bucket=BUCKET, Prefix="c/digits/")["Contents"]
    uploaded = sorted(item["Key"] for item in listed if item["Key"].endswith(".tar"))
    local = sorted(path.name for path in digits_shards.glob("*.tar"))  # one local process
    assert uploaded == [f"c/digits/{name}" for name in local] and len(local) > 1
    for name in local:
        body = s3_server.get_object(Bucket=BUCKET, Key=f"c/digits/{name}")["Body"].read()
        assert body == (digits_shards / name).read_bytes(), name
    assert len(set(shard_task_nodes(cluster, len(local)))) >= 2

    remote = str(tmp_path / "dvc-remote")  # a DVC remote: the records travel through it
    finish(dvc(sharding, "remote", "add", "--local", "-d", "store", remote))
    finish(dvc(sharding, "push"))

    driver = tmp_path / "driver"
    subprocess.run(["git", "clone", "-q", str(sharding), str(driver)], check=True)
    shutil.copy2(sharding / "dvc.lock", driver / "dvc.lock")  # as `git pull` would bring it
    finish(dvc(driver, "remote", "add", "--local", "-d", "store", remote))
    finish(dvc(driver, "pull", "data/shards/digits", "data/published/digits.json"))
    assert not shard_files(driver) and (driver / "data/published/digits.json").is_file()
    output = finish(dvc(driver, "repro"))
    assert "epoch 1/1" in output
    ran = set(re.findall(r"Running stage '([^']+)'", output))
    assert ran == {"params", "pretrain@tiny", "features@tiny", "probe@tiny", "transfer@tiny",
                   "geometry@tiny", "report"}, output
    assert not shard_files(driver)
    assert "up to date" in finish(dvc(driver, "status"))

    params = yaml.safe_load((driver / "params.yaml").read_text())
    params["datasets"]["digits"]["shards"] = {"samples_per_shard": 300}
    (driver / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    finish(dvc(driver, "repro", "publish@digits"))  # the digits are bundled: sharded here
    status = finish(dvc(driver, "status"))
    assert all(f"{stage}@tiny:" in status for stage in ("pretrain", "features", "transfer",
                                                        "geometry")), status
    assert not shard_files(driver)


def test_losing_a_worker_node_resumes_from_the_last_checkpoint(cluster, shards_url,
                                                               digits_shards, s3_server,
                                                               tmp_path):
    """Last in this module: it removes a node (two remain, enough for two workers)."""
    ray = {"address": cluster.address, "num_workers": 2, "max_failures": 1,
           "storage_path": f"s3://{BUCKET}/node-loss"}
    project = stage_project(tmp_path, digits_shards, TRAIN_RUN, ray, shards_url)
    driver = start_pretrain(project)
    prefix = f"node-loss/{run_id('tiny', TRAINED)}"
    wait_for_checkpoint(s3_server, prefix, driver)
    lost = train_worker_nodes(cluster, driver.pid, state="ALIVE")[0]
    cluster.nodes.remove_node(next(node for node in cluster.nodes.worker_nodes
                                   if node.node_id == lost))
    output = finish(driver)
    assert "resumed from epoch" in output, output
    history = (project / f"plots/pretrain/tiny/seed_{SEED}.tsv").read_text().splitlines()[1:]
    assert [int(row.split("\t")[0]) for row in history] == list(range(1, 11))
    nodes = train_worker_nodes(cluster, driver.pid)  # both groups' workers, dead now
    assert len(nodes) == 4 and lost in nodes
    assert len(set(nodes) - {lost}) == 2  # the restarted group: the two remaining nodes

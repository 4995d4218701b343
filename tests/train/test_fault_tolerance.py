"""Interruptions, worker failures, divergence and multi-worker equivalence, on real Ray."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.errors import UserError
from pipeline.nets.backbones import load_encoder
from pipeline.params.ray import RayConfig
from pipeline.params.schema import load_params
from pipeline.params.training import RunConfig
from pipeline.train.launcher import COMPLETED_MARKER, pretrain, run_id
from stages import params as params_stage

ROOT = Path(__file__).resolve().parents[2]


def run_config(data: dict | None = None, **train) -> RunConfig:
    return RunConfig.model_validate({
        "dataset": "digits", "seed": 5,
        "backbone": {"name": "small_cnn", "width": 8},
        "method": {"name": "simclr", "projector": {"hidden_dim": 32, "output_dim": 16}},
        "train": {"epochs": 24, "batch_size": 128, "checkpoint_every_epochs": 2, **train},
        "data": data or {},
    })


STREAMED = {"loader": "stream", "workers": 2, "shuffle_buffer": 300}


def wait_for(path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def registered_epochs(run_dir: Path) -> list[int]:
    """Epochs of the checkpoints Ray Train has registered, from the snapshot its controller
    writes (what a resumed run starts from); [] before the first, or mid-write."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [int(result["checkpoint_dir_name"].removeprefix("epoch_"))
            for result in snapshot["checkpoint_results"]]


def stage_project(tmp_path: Path, shards: Path, run: RunConfig, address: str) -> Path:
    """A directory where `python -m stages.pretrain tiny` runs against the given cluster."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.pop("report")  # its control and supervised runs are not here
    params["runs"] = {"tiny": run.model_dump(mode="json", exclude={"seed"})}
    params["seeds"] = [run.seed]
    params["ray"]["address"] = address
    (tmp_path / "data" / "shards").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data" / "shards" / "digits").symlink_to(shards)
    with contextlib.chdir(tmp_path):  # resolved/: what the stage reads
        params_stage.main(load_params("params.yaml"))
    return tmp_path


def start_stage(project: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DVC_EXP_NAME", None)
    return subprocess.Popen([sys.executable, "-m", "stages.pretrain", "tiny"], cwd=project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


@pytest.mark.parametrize(("data", "epochs"), [({}, 24), (STREAMED, 4)],
                         ids=["memory", "stream"])
def test_killed_stage_resumes_and_matches_an_uninterrupted_run(ray_cluster, digits_shards,
                                                               tmp_path, data, epochs):
    """Killed mid-epoch (after a checkpoint), resumed, and bitwise equal to a run that was
    never interrupted: with the memory loader and with the streaming one (two loader
    processes), whose data position is part of the checkpoint. The uninterrupted run
    trains alongside (one CPU each of the cluster's two)."""
    run = run_config(data, epochs=epochs)
    address = ray_cluster.get_runtime_context().gcs_address
    interrupted = stage_project(tmp_path / "a", digits_shards, run, address)
    fresh = stage_project(tmp_path / "b", digits_shards, run, address)
    uninterrupted = start_stage(fresh)
    stage = start_stage(interrupted)
    # a checkpoint directory can appear on disk well before the controller registers it
    # (the worker runs a report ahead of it), so kill once one is registered
    run_dir = interrupted / "ray_results" / run_id("tiny", run)
    deadline = time.monotonic() + 300
    while not (registered := registered_epochs(run_dir)):
        assert time.monotonic() < deadline and stage.poll() is None, "no checkpoint registered"
        time.sleep(0.02)
    os.killpg(stage.pid, signal.SIGKILL)
    stage.wait()
    assert not (interrupted / "models").exists()

    resumed = start_stage(interrupted)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    resumed_from = int(output.split("resumed from epoch ")[1].split()[0])
    assert max(registered) <= resumed_from < epochs
    assert f"epoch {resumed_from + 1}/{epochs}" in output and f"epoch 1/{epochs}" not in output

    output, _ = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, output
    a = load_encoder(interrupted / f"models/tiny/seed_{run.seed}/encoder.pt").state_dict()
    b = load_encoder(fresh / f"models/tiny/seed_{run.seed}/encoder.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from uninterrupted"


def test_resume_with_another_world_size_or_a_truncated_state_names_the_checkpoint(
        ray_cluster, digits_shards, tmp_path):
    """A streamed run's batches depend on its readers (ranks x loader processes): its
    checkpoint, resumed on two workers instead of one, stops with one line naming the
    checkpoint file and ray.num_workers instead of training on other batches. A truncated
    state file is one line naming it, raised inside the workers."""
    run = run_config(STREAMED, epochs=2)
    one = RayConfig(storage_path=str(tmp_path))
    pretrain("tiny", run, digits_shards, one)
    run_dir = tmp_path / run_id("tiny", run)
    (run_dir / COMPLETED_MARKER).unlink()  # as if killed right after its last checkpoint
    two = one.model_copy(update={"num_workers": 2})
    with pytest.raises(UserError) as error:
        pretrain("tiny", run, digits_shards, two)
    message = str(error.value)
    assert message == (f"{run_dir}/epoch_000002/state.pt: written with ray.num_workers: 1, "
                       f"this run has 2, so its data would not continue exactly; set it back "
                       f"to 1, or delete the checkpoint's run directory to start afresh")
    assert "\n" not in message

    state = run_dir / "epoch_000002" / "state.pt"  # truncated: one line from the workers too
    state.write_bytes(state.read_bytes()[:4096])
    with pytest.raises(UserError) as error:
        pretrain("tiny", run, digits_shards, one)
    assert str(error.value) == (f"{state}: corrupt or truncated PyTorch file (unreadable zip "
                                "archive)")


def test_killed_worker_is_restarted_from_the_checkpoint(ray_cluster, digits_shards, tmp_path):
    from ray.util.state import list_actors

    run = run_config(epochs=16)
    ray_cfg = RayConfig(storage_path=str(tmp_path), max_failures=1)
    results: dict = {}
    thread = threading.Thread(target=lambda: results.update(
        result=pretrain("tiny", run, digits_shards, ray_cfg)))
    thread.start()
    wait_for(tmp_path / run_id("tiny", run) / "epoch_000002")
    # this session's cluster by address: another local Ray instance would be ambiguous
    workers = list_actors(address=ray_cluster.get_runtime_context().gcs_address,
                          filters=[("class_name", "=", "RayTrainWorker"),
                                   ("state", "=", "ALIVE")])
    assert len(workers) == 1
    os.kill(workers[0]["pid"], signal.SIGKILL)
    thread.join(timeout=600)
    history = results["result"].history
    assert [row["epoch"] for row in history] == list(range(1, 17))


def test_divergence_names_epoch_and_step_and_keeps_the_last_checkpoint(ray_cluster,
                                                                       digits_shards, tmp_path):
    run = RunConfig.model_validate({
        "dataset": "digits", "backbone": {"name": "small_cnn", "width": 4},
        "method": {"name": "supervised"},
        "train": {"epochs": 6, "batch_size": 512, "checkpoint_every_epochs": 1,
                  "optimizer": {"name": "sgd", "lr": 1e38, "momentum": 0.0,
                                "schedule": "constant", "exclude_bias_and_norm": False}},
    })
    with pytest.raises(UserError, match=r"non-finite loss \(.*\) at epoch 2, step 2 of run "
                                        r"'tiny'; the last good checkpoint is kept \(epoch 1\)"):
        pretrain("tiny", run, digits_shards, RayConfig(storage_path=str(tmp_path)))
    run_dir = tmp_path / run_id("tiny", run)
    assert (run_dir / "epoch_000001" / "state.pt").exists()
    assert not (run_dir / "epoch_000002").exists()


def test_two_workers_take_the_same_first_step_as_one_worker(ray_cluster, digits_shards,
                                                            tmp_path):
    """Deterministic views, per-sample norms: the gathered loss and DDP's averaged
    gradients must reproduce the single-worker step (one SGD step: equal weights)."""
    run = RunConfig.model_validate({
        "dataset": "digits", "seed": 1,
        "backbone": {"name": "small_cnn", "width": 4, "norm": "group"},
        "method": {"name": "simclr", "projector": {"hidden_dim": 32, "output_dim": 16,
                                                  "batch_norm": False}},
        "views": {"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "color_jitter": 0.0,
                  "grayscale": 0.0},
        "train": {"epochs": 1, "batch_size": 512,
                  "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.0,
                                "weight_decay": 0.0, "schedule": "constant"}},
    })
    encoders = [pretrain("tiny", run, digits_shards,
                         RayConfig(num_workers=workers, storage_path=str(tmp_path / str(workers))
                                   )).encoder.state_dict()
                for workers in (1, 2)]
    one, two = encoders
    assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)

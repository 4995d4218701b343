"""Start (or join) a Ray cluster and run one pretraining run with Ray Train.

Checkpoints live in `ray.storage_path/<run id>`, where the run id is derived from the
run's name, its params and (under `dvc exp run`) the experiment name, so an interrupted
run resumes from its last checkpoint while distinct configs or experiments never share
checkpoints. A run that completed is not resumed: DVC reran it for a reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from pyarrow.fs import FileSystem, FileType, LocalFileSystem

from pipeline.data.shards import manifest_digest, read_manifest
from pipeline.data.storage import check_bucket, is_url
from pipeline.errors import UserError
from pipeline.methods.dsa import check_prior, with_absolute_prior_path
from pipeline.nets.backbones import Encoder, load_encoder
from pipeline.params import RayConfig, RunConfig
from pipeline.train.loop import (
    DIVERGED,
    ENCODER_FILE,
    HISTORY_FILE,
    make_encoder,
    train_worker,
)

COMPLETED_MARKER = "completed.json"
# Worker prints reach the driver once (not twice through Train's print patch), and Ray
# Train's controller polls workers often enough that a report costs ~0.25 s, not ~2 s.
RAY_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}
# A single machine has no spot nodes to be reclaimed: Train's preemption watcher would only
# cost every run one more actor process (and an error-level log line at its start).
LOCAL_RAY_ENV = {**RAY_ENV, "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


@dataclass
class PretrainResult:
    encoder: Encoder
    history: list[dict[str, float]]
    run_dir: str


def run_id(run_name: str, run: RunConfig, experiment: str | None = None) -> str:
    """Checkpoint directory name: `[<experiment>-]<run>-<hash of the run's params>`."""
    digest = hashlib.sha256(run.model_dump_json().encode()).hexdigest()[:10]
    prefix = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', experiment)}-" if experiment else ""
    return f"{prefix}{run_name}-{digest}"


def check_resources(ray_cfg: RayConfig, run_name: str, run: RunConfig, train_size: int) -> None:
    """Fail early, naming the key, instead of letting Ray wait forever for resources."""
    if run.train.batch_size % ray_cfg.num_workers:
        raise UserError(f"params.yaml: runs.{run_name}.train.batch_size: "
                        f"{run.train.batch_size} is not divisible by ray.num_workers "
                        f"({ray_cfg.num_workers})")
    if train_size < run.train.batch_size:
        raise UserError(f"params.yaml: runs.{run_name}.train.batch_size: {run.train.batch_size} "
                        f"is larger than the training split ({train_size} images)")
    if ray_cfg.address == "local":
        needed = ray_cfg.num_workers * ray_cfg.cpus_per_worker
        available = os.cpu_count() or 1
        if needed > available:
            raise UserError(f"params.yaml: ray.cpus_per_worker: {ray_cfg.num_workers} workers x "
                            f"{ray_cfg.cpus_per_worker} CPUs = {needed}, but this machine has "
                            f"{available}")
        gpus = ray_cfg.num_workers * ray_cfg.gpus_per_worker
        if ray_cfg.use_gpu and torch.cuda.device_count() < gpus:
            raise UserError(f"params.yaml: ray.use_gpu: {ray_cfg.num_workers} workers x "
                            f"{ray_cfg.gpus_per_worker} GPUs, this machine has "
                            f"{torch.cuda.device_count()}")


def init_ray(ray_cfg: RayConfig, num_cpus: int | None = None) -> None:
    """Start an embedded cluster (`local`) or join one; a no-op when already connected.

    `local` joins the cluster `RAY_ADDRESS` names when it is set (as Ray's own `ray.init`
    does): `scripts/repro.sh` holds one open for all pretrain stages of a `dvc repro`.
    """
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"env_vars": LOCAL_RAY_ENV if ray_cfg.address == "local" else RAY_ENV}
    if ray_cfg.address == "local" and os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env)
    elif ray_cfg.address == "local":
        # The dashboard (bound to localhost) serves the state API Ray Train polls.
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=True,
                 dashboard_host="127.0.0.1", runtime_env=runtime_env,
                 configure_logging=False)
    else:
        # Workers on other machines import this driver's `pipeline` (shipped with the job),
        # not whatever version their image holds; a path, as Ray Client pickles it.
        package = str(Path(__file__).resolve().parents[1])
        ray.init(address=ray_cfg.address, runtime_env={**runtime_env, "py_modules": [package]})


def untrained_encoder(run: RunConfig, shard_dir: str | Path) -> Encoder:
    torch.manual_seed(run.seed)
    return make_encoder(run, read_manifest(shard_dir))


def _storage(storage_path: str) -> tuple[FileSystem, str, str]:
    """Filesystem, root within it, and the path to give Ray for `ray.storage_path`: a
    local directory or a URI (s3://, gs://, ...) that every node of a cluster reaches."""
    if "://" in storage_path:
        check_bucket(storage_path, "params.yaml: ray.storage_path")
        filesystem, root = FileSystem.from_uri(storage_path)
        return filesystem, root, storage_path
    root = str(Path(storage_path).resolve())
    return LocalFileSystem(), root, root


def _shard_location(shard_dir: str | Path) -> str:
    """What workers read: the URL, or the directory as an absolute path."""
    return str(shard_dir) if is_url(shard_dir) else str(Path(shard_dir).resolve())


def _diverged_message(error: BaseException) -> str | None:
    """The loop's one-line NaN message, if that is why Ray Train failed."""
    match = re.search(rf"{DIVERGED}[^\n]*", str(error))
    return match.group(0) if match else None


def pretrain(run_name: str, run: RunConfig, shard_dir: str | Path, ray_cfg: RayConfig,
             experiment: str | None = None) -> PretrainResult:
    """Train with Ray Train (resuming an interrupted run) and return the final encoder.

    `shard_dir` is a directory or a URL prefix (published shards); on a multi-node cluster
    every node must reach it, as it must reach `ray.storage_path`.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchTrainer

    manifest = read_manifest(shard_dir)
    check_resources(ray_cfg, run_name, run, manifest["splits"]["train"]["count"])
    check_prior(run_name, run)
    name = run_id(run_name, run, experiment)
    filesystem, storage, ray_storage = _storage(ray_cfg.storage_path)
    run_dir = f"{storage}/{name}"
    marker = f"{run_dir}/{COMPLETED_MARKER}"
    if filesystem.get_file_info(marker).type != FileType.NotFound:
        filesystem.delete_dir(run_dir)
    init_ray(ray_cfg)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"run": with_absolute_prior_path(run).model_dump(mode="json"),
                           "run_name": run_name,
                           "shard_dir": _shard_location(shard_dir),
                           "manifest_digest": manifest_digest(manifest)},
        scaling_config=ScalingConfig(
            num_workers=ray_cfg.num_workers, use_gpu=ray_cfg.use_gpu,
            resources_per_worker={"CPU": ray_cfg.cpus_per_worker,
                                  **({"GPU": ray_cfg.gpus_per_worker} if ray_cfg.use_gpu
                                     else {})}),
        run_config=RayRunConfig(
            name=name, storage_path=ray_storage,
            failure_config=FailureConfig(max_failures=ray_cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level="WARNING")),
    )
    try:
        result = trainer.fit()
    except Exception as error:
        message = _diverged_message(error)
        if message:
            raise UserError(f"{message} in {run_dir}") from None
        raise
    with result.checkpoint.as_directory() as directory:
        encoder = load_encoder(Path(directory) / ENCODER_FILE)
        history = json.loads((Path(directory) / HISTORY_FILE).read_text())
    with filesystem.open_output_stream(marker) as stream:
        stream.write(json.dumps({"epochs": len(history)}).encode() + b"\n")
    return PretrainResult(encoder, history, run_dir)

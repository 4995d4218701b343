"""Start (or join) a Ray cluster and run one pretraining run with Ray Train.

Checkpoints live in `ray.storage_path/<run id>`, where the run id is derived from the
run's name, its params and (under `dvc exp run`) the experiment name, so an interrupted
run resumes from its last checkpoint while distinct configs or experiments never share
checkpoints. A run that completed is not resumed: DVC reran it for a reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pyarrow.fs import FileSystem, FileType, LocalFileSystem

from pipeline.cluster import init_ray
from pipeline.data.shards import manifest_digest, read_manifest
from pipeline.data.storage import check_bucket, is_url, read_policy
from pipeline.errors import UserError
from pipeline.methods.priors import check_prior, with_absolute_prior_path
from pipeline.nets.backbones import Encoder, load_encoder
from pipeline.params.ray import RayConfig
from pipeline.params.training import RunConfig
from pipeline.train.checkpoint import ENCODER_FILE, HISTORY_FILE
from pipeline.train.checks import check_resources, check_run
from pipeline.train.loop import TrainingDiverged, make_encoder, train_worker

COMPLETED_MARKER = "completed.json"
# Ray Train's console output (a line per report, autoscaler timeouts on a loaded machine, a
# failed worker's traceback next to the one line the stage prints) goes to its log files
# only: <Ray temp dir>/session_latest/logs/train/ on each node. Failures still reach the
# driver as exceptions.
TRAIN_CONSOLE_LEVEL = "CRITICAL"


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


def untrained_encoder(run: RunConfig, shard_dir: str | Path) -> Encoder:
    torch.manual_seed(run.seed)
    return make_encoder(run, read_manifest(shard_dir))


def _storage(storage_path: str) -> tuple[FileSystem, str, str]:
    """Filesystem, root within it, and the path to give Ray for `ray.storage_path`: a
    local directory or a URI (s3://, gs://, ...) that every node of a cluster reaches."""
    if "://" in storage_path:
        check_bucket(storage_path, "ray.storage_path")
        filesystem, root = FileSystem.from_uri(storage_path)
        return filesystem, root, storage_path
    root = str(Path(storage_path).resolve())
    return LocalFileSystem(), root, root


def run_worker(config: dict[str, Any]) -> None:
    """What Ray Train runs on every worker: the loop, with Ray's INFO records (a line per
    report) kept in its log files rather than printed beside the progress lines."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    train_worker(config)


def worker_user_error(error: BaseException) -> UserError | None:
    """The user error a worker raised (lowest rank first), if that is why training failed:
    Ray Train hands the driver each failed worker's own exception."""
    failures = getattr(error, "worker_failures", None) or {}
    return next((failure for _, failure in sorted(failures.items())
                 if isinstance(failure, UserError)), None)


def _shard_location(shard_dir: str | Path) -> str:
    """What workers read: the URL, or the directory as an absolute path."""
    return str(shard_dir) if is_url(shard_dir) else str(Path(shard_dir).resolve())


def pretrain(run_name: str, run: RunConfig, shard_dir: str | Path, ray_cfg: RayConfig,
             experiment: str | None = None) -> PretrainResult:
    """Train with Ray Train (resuming an interrupted run) and return the final encoder.

    `shard_dir` is a directory or a URL prefix (published shards); on a multi-node cluster
    every node must reach it, as it must reach `ray.storage_path`.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchTrainer

    check_run(run_name, run, ray_cfg, shard_dir)
    check_resources(ray_cfg)
    manifest = read_manifest(shard_dir)
    check_prior(run_name, run)
    name = run_id(run_name, run, experiment)
    filesystem, storage, ray_storage = _storage(ray_cfg.storage_path)
    run_dir = f"{storage}/{name}"
    marker = f"{run_dir}/{COMPLETED_MARKER}"
    if filesystem.get_file_info(marker).type != FileType.NotFound:
        filesystem.delete_dir(run_dir)
    init_ray(ray_cfg)
    trainer = TorchTrainer(
        run_worker,
        train_loop_config={"run": with_absolute_prior_path(run).model_dump(mode="json"),
                           "run_name": run_name,
                           "shard_dir": _shard_location(shard_dir),
                           "manifest_digest": manifest_digest(manifest),
                           "read_policy": read_policy()},
        scaling_config=ScalingConfig(
            num_workers=ray_cfg.num_workers, use_gpu=ray_cfg.use_gpu,
            resources_per_worker={"CPU": ray_cfg.cpus_per_worker,
                                  **({"GPU": ray_cfg.gpus_per_worker} if ray_cfg.use_gpu
                                     else {})}),
        run_config=RayRunConfig(
            name=name, storage_path=ray_storage,
            failure_config=FailureConfig(max_failures=ray_cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level=TRAIN_CONSOLE_LEVEL)),
    )
    try:
        result = trainer.fit()
    except Exception as error:
        user_error = worker_user_error(error)
        if isinstance(user_error, TrainingDiverged):
            raise UserError(f"{run_dir}: {user_error}") from None
        if user_error is not None:
            raise user_error from None
        raise
    with result.checkpoint.as_directory() as directory:
        encoder = load_encoder(Path(directory) / ENCODER_FILE)
        history = json.loads((Path(directory) / HISTORY_FILE).read_text())
    with filesystem.open_output_stream(marker) as stream:
        stream.write(json.dumps({"epochs": len(history)}).encode() + b"\n")
    return PretrainResult(encoder, history, run_dir)

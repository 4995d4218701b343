"""Start (or join) a Ray cluster and run one pretraining run with Ray Train."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.data.shards import read_manifest
from pipeline.errors import UserError
from pipeline.nets.backbones import Encoder, load_encoder
from pipeline.params import RayConfig, RunConfig
from pipeline.train.loop import ENCODER_FILE, HISTORY_FILE, make_encoder, train_worker


@dataclass
class PretrainResult:
    encoder: Encoder
    history: list[dict[str, float]]


def run_id(run_name: str, run: RunConfig) -> str:
    """Checkpoint directory name: distinct configs of one run never share checkpoints."""
    digest = hashlib.sha256(run.model_dump_json().encode()).hexdigest()[:10]
    return f"{run_name}-{digest}"


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
        if ray_cfg.use_gpu and torch.cuda.device_count() < ray_cfg.num_workers:
            raise UserError(f"params.yaml: ray.use_gpu: {ray_cfg.num_workers} workers need a GPU "
                            f"each, this machine has {torch.cuda.device_count()}")


# Worker prints go straight to the driver's terminal (once, not twice via Train's patch).
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}


def init_ray(ray_cfg: RayConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"env_vars": WORKER_ENV}
    if ray_cfg.address == "local":
        # The dashboard (bound to localhost) serves the state API Ray Train polls.
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=True,
                 dashboard_host="127.0.0.1", runtime_env=runtime_env,
                 configure_logging=False)
    else:
        ray.init(address=ray_cfg.address, runtime_env=runtime_env)


def untrained_encoder(run: RunConfig, shard_dir: Path) -> Encoder:
    torch.manual_seed(run.seed)
    return make_encoder(run, read_manifest(shard_dir))


def pretrain(run_name: str, run: RunConfig, shard_dir: Path, ray_cfg: RayConfig
             ) -> PretrainResult:
    """Train with Ray Train and return the final encoder and per-epoch history."""
    from ray.train import LoggingConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchTrainer

    manifest = read_manifest(shard_dir)
    check_resources(ray_cfg, run_name, run, manifest["splits"]["train"]["count"])
    init_ray(ray_cfg)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"run": run.model_dump(mode="json"), "run_name": run_name,
                           "shard_dir": str(shard_dir.resolve())},
        scaling_config=ScalingConfig(num_workers=ray_cfg.num_workers, use_gpu=ray_cfg.use_gpu,
                                     resources_per_worker={"CPU": ray_cfg.cpus_per_worker}),
        run_config=RayRunConfig(name=run_id(run_name, run),
                                storage_path=str(Path(ray_cfg.storage_path).resolve()),
                                logging_config=LoggingConfig(log_level="WARNING")),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as directory:
        encoder = load_encoder(Path(directory) / ENCODER_FILE)
        history = json.loads((Path(directory) / HISTORY_FILE).read_text())
    return PretrainResult(encoder, history)

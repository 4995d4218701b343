"""`runs.<run>`: the optimiser, the schedule, the online monitor and the loader, and the
pretraining run as a whole (`RunConfig`: everything `pretrain@<run>` computes with)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pipeline.params.base import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Strict,
)
from pipeline.params.methods import Backbone, Method, Regulator, ViewsConfig


class OptimizerConfig(Strict):
    """`lr` is for a global batch of 256 when `lr_scaling` is linear or sqrt (the SSL
    convention); LARS and `exclude_bias_and_norm` follow SimCLR/BYOL."""

    name: Literal["sgd", "adam", "adamw", "lars"] = "adam"
    lr: PositiveFloat = 1e-3
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    weight_decay: NonNegativeFloat = 1e-6
    exclude_bias_and_norm: bool = True
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    trust_coefficient: PositiveFloat = 0.001
    warmup_epochs: NonNegativeInt = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0


class MonitorConfig(Strict):
    """Online probes during pretraining, on rank 0: kNN (train split as memory bank, test
    split as queries) and a linear probe (train -> test) with one fixed weight decay, so
    the report can draw linear accuracy against epochs from a single run, plus the
    label-free RankMe and feature std of the same train features.

    Independently of `every_epochs`, every epoch checks the encoder's features of its last
    batch for collapse and prints a `warning:` line when either collapse floor is crossed
    (training continues)."""

    every_epochs: NonNegativeInt = 0  # 0: off; the last epoch is always monitored
    k: PositiveInt = 20
    temperature: PositiveFloat = 0.07
    max_samples: PositiveInt = 10_000
    linear_weight_decay: PositiveFloat = 1e-4  # fixed: no validation split per epoch
    linear_max_iter: PositiveInt = 300
    collapse_std_fraction: Probability = 0.05
    """Warn when the per-dimension std of the L2-normalised features falls below this
    fraction of 1/sqrt(D) (its value for features spread over the sphere); 0: never.
    benchmarks/collapse_floors.py (digits, batch 128): healthy SimCLR, BYOL and supervised
    runs, untrained encoders included, stay at or above 0.15 (small_cnn, D=64: ReLU
    features live in one orthant) and 0.24 (ResNet-18, two epochs); a BYOL built to
    collapse reads 0.048 after one epoch, 0.012 after two and 0.004 from the fourth on."""
    collapse_rank_fraction: Probability = 0.05
    """Warn when RankMe of the batch's features falls below this fraction of min(N, D),
    RankMe's largest possible value; 0: never. Measured as above: healthy runs stay at or
    above 0.18 (small_cnn) and 0.31 (ResNet-18); the collapsing BYOL reads 0.059, 0.024,
    then 0.018 (RankMe 1.14 of 64). RankMe is at least ~1, so this floor can act only
    where min(N, D) > 1 / fraction (20 at the default)."""


class TrainConfig(Strict):
    epochs: NonNegativeInt = 100
    batch_size: PositiveInt = 256
    optimizer: OptimizerConfig = OptimizerConfig()
    checkpoint_every_epochs: PositiveInt = 10
    # auto: bf16 on a GPU with native bf16 (Ampere on), else fp32; bf16 on an older GPU is
    # an error (CPU bf16 autocast is allowed)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True  # CPU too (oneDNN); method_step_time.py --nchw compares
    compile: bool = False  # torch.compile the method (CUDA recommended)
    monitor: MonitorConfig = MonitorConfig()


class DataConfig(Strict):
    """How pretraining reads its shards.

    `memory` loads the splits onto every rank's device; `stream` reads them with
    webdataset: shards split over ranks and loader workers, a seeded shuffle buffer, and
    an explicit epoch length (total images // batch_size batches on every rank), so ranks
    never wait on each other at an uneven end of data. `auto` holds the splits in memory
    while they fit `memory_budget_mb` decoded, and streams them above it.
    """

    loader: Literal["auto", "memory", "stream"] = "auto"
    memory_budget_mb: PositiveInt = 2048
    """Per rank, MiB that images may take (decoded uint8). With the memory loader, in the
    memory of the rank's device (GPU memory with `ray.use_gpu`, host memory on CPU): the
    whole splits must fit. Streamed, in host memory: each loader process's shuffle buffer
    plus its prefetched batches must fit, together. Checked before Ray starts."""
    splits: Annotated[list[str], Field(min_length=1)] = ["train"]  # [train, unlabeled]: STL-10
    workers: NonNegativeInt = 2  # loader processes per Ray worker (stream)
    shuffle_buffer: NonNegativeInt = 5000  # samples per loader process (stream)
    on_corrupt: Literal["error", "skip"] = "error"  # skip: drop the shard, count it



class RunConfig(Strict):
    """One pretraining run: a dataset, a backbone, a method, its views and schedule.

    A run is trained once per seed of the top-level `seeds` list; `seed` is filled in
    per training by the pretrain stage and is not written in params.yaml.
    """

    dataset: str
    seed: int = Field(0, json_schema_extra={"internal": True})  # one of `seeds`
    backbone: Backbone
    method: Method
    regulator: Regulator | None = None
    views: ViewsConfig = ViewsConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()


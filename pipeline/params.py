"""The schema of params.yaml, validated by pydantic.

Every stage loads the whole file through `load_params` before doing anything, so a typo
anywhere (including one made with `dvc exp run -S`) stops the pipeline with the YAML path
of the bad value instead of silently training the wrong thing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import UserError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class ParamsError(UserError):
    """Invalid params: `errors` holds `(yaml_path, message)` pairs, one per problem.

    Library code that finds a bad value names its key here (the stage knows which file
    the params came from and prints `<file>: <key>: <message>`).
    """

    def __init__(self, errors: list[tuple[str, str]], source: str = "params.yaml"):
        self.errors = errors
        self.source = source
        super().__init__("\n".join(self.lines()))

    def __reduce__(self):  # rebuilt from its fields, not from the joined message
        return (self.__class__, (self.errors, self.source))

    def lines(self) -> list[str]:
        return [f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}"
                for path, message in self.errors]


class Strict(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- datasets


class DigitsSource(Strict):
    """scikit-learn's bundled digits: 1,797 real 8x8 grayscale images, 10 classes."""

    name: Literal["digits"]


class FashionMNISTSource(Strict):
    """Fashion-MNIST IDX files (gzipped or not); the default path is where the Debian
    package `dataset-fashion-mnist` installs them."""

    name: Literal["fashion_mnist"]
    path: str = "/usr/share/datasets/fashion-mnist"


class MNISTSource(Strict):
    """MNIST IDX files (train-images-idx3-ubyte[.gz] and friends) in `path`."""

    name: Literal["mnist"]
    path: str


class CIFARSource(Strict):
    """The python pickle format: `path` is cifar-10-batches-py or cifar-100-python."""

    name: Literal["cifar10", "cifar100"]
    path: str
    labels: Literal["fine", "coarse"] = "fine"  # CIFAR-100's 100 or 20 classes


class STL10Source(Strict):
    """STL-10 binary format (`path` is stl10_binary). `unlabeled` adds the 100,000
    unlabeled images as split `unlabeled` (label -1), read by pretraining only."""

    name: Literal["stl10"]
    path: str
    unlabeled: bool = True


class ImageFolderSource(Strict):
    """root/<split>/<class>/<image> (splits `train` and optionally `test`; a root holding
    class folders directly is one split, divided by `split`). Any format PIL reads.

    Images are decoded to the dataset's `image_size` (shorter side resized, centre crop) for
    batching; `storage: encoded` keeps the original file bytes in the shards, `raw` stores
    decoded uint8 (faster to read for small images), `auto` picks raw up to 64 pixels.
    """

    name: Literal["imagefolder"]
    path: str
    channels: Literal[1, 3] = 3
    storage: Literal["auto", "encoded", "raw"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _image_size_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "image_size" in data:
            raise ValueError("image_size: moved up one level, to datasets.<name>.image_size")
        return data


Source = Annotated[
    DigitsSource | FashionMNISTSource | MNISTSource | CIFARSource | STL10Source
    | ImageFolderSource,
    Field(discriminator="name"),
]


class SplitConfig(Strict):
    """How a source without an official split is divided, and which classes are held out.

    Held-out classes never reach pretraining or the in-domain probe; the transfer stage
    probes on them (pretrain on some classes, transfer to the others). `seed` draws both the
    split and the dataset's `max_per_class` subsets.
    """

    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.3
    # true: `test` is a stratified `test_fraction` of the official train split and the
    # official test split is never read (choose hyperparameters here, then freeze them)
    validation: bool = False
    heldout_classes: list[NonNegativeInt] = []
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0  # the range numpy and sklearn seed from


class ShardConfig(Strict):
    samples_per_shard: PositiveInt = 1000
    workers: PositiveInt | None = None  # processes writing shards; default: one per core


# The URLs `datasets.<name>.publish` accepts (pipeline.data.storage reads and writes them):
# pyarrow's filesystems (read and written), http(s) and `pipe:COMMAND` (read only).
FILESYSTEM_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "file")
HTTP_SCHEMES = ("http", "https")
FILE_PLACEHOLDER = "{file}"  # where a pipe: command takes the file name


def _check_location(value: str, schemes: tuple[str, ...]) -> str:
    """An absolute directory, or a URL whose scheme is one of `schemes` (or pipe:)."""
    if value.startswith("/") or ("://" in value
                                 and urlsplit(value).scheme.lower() in schemes):
        return value
    if value.startswith("pipe:") and "pipe" in schemes:
        if FILE_PLACEHOLDER not in value:
            raise ValueError(f"a pipe: command needs {FILE_PLACEHOLDER} where the file name goes")
        return value
    raise ValueError(f"'{value}' must be an absolute directory or a URL "
                     f"({', '.join(f'{s}://' for s in schemes if s != 'pipe')}"
                     f"{', pipe:' if 'pipe' in schemes else ''})")


class PublishConfig(Strict):
    """Shards where every node of a cluster reads them: `publish@<dataset>` copies
    data/shards/<dataset> (the shards, then the manifest) to `url`, and the later stages
    read them from `read_url` (default: `url`), after checking that the manifest found
    there is the local one. Credentials and endpoints come from each store's usual
    environment variables (AWS_*, GOOGLE_APPLICATION_CREDENTIALS), never from here.
    """

    url: str  # s3://bucket/prefix, gs://..., hdfs://..., abfs://..., file:///dir or /dir
    read_url: str | None = None  # null: url; also http(s)://host/prefix, pipe:CMD with {file}

    @field_validator("url")
    @classmethod
    def _writable(cls, value: str) -> str:
        return _check_location(value, FILESYSTEM_SCHEMES)

    @field_validator("read_url")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is None:
            return value
        return _check_location(value, (*FILESYSTEM_SCHEMES, *HTTP_SCHEMES, "pipe"))


SplitName = Literal["train", "test", "unlabeled", "transfer_train", "transfer_test"]


class DatasetConfig(Strict):
    """A source, how it is split, and its scale controls.

    `image_size` resizes every split to image_size x image_size (null: the source's native
    size; required for imagefolder, whose files have no common size). `max_per_class` caps
    a split at a random subset of at most N images per class, drawn with `split.seed`
    (unlabeled images count as one class), before any image is resized or decoded.
    """

    source: Source
    split: SplitConfig = SplitConfig()
    shards: ShardConfig = ShardConfig()
    image_size: PositiveInt | None = Field(None, validate_default=True)
    max_per_class: dict[SplitName, PositiveInt] = {}
    publish: PublishConfig | None = None  # copy the shards to object storage (cluster.md)

    @field_validator("image_size")
    @classmethod
    def _imagefolder_needs_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None and isinstance(info.data.get("source"), ImageFolderSource):
            raise ValueError("required key is missing (imagefolder decodes every image "
                             "to this side)")
        return value

    @field_validator("max_per_class")
    @classmethod
    def _unlabeled_split_exists(cls, value: dict[str, int], info: ValidationInfo
                                ) -> dict[str, int]:
        source = info.data.get("source")
        has_unlabeled = isinstance(source, STL10Source) and source.unlabeled
        if "unlabeled" in value and source is not None and not has_unlabeled:
            raise ValueError("unlabeled: this source has no unlabeled split "
                             "(stl10 with unlabeled: true has one)")
        return value


# ------------------------------------------------------------------------------ networks


class SmallCNNBackbone(Strict):
    """A four-layer convnet for tiny images (digits, MNIST-sized).

    `norm: group` normalises each sample on its own, so W CPU workers compute exactly the
    gradients of one worker with the whole batch (BatchNorm needs SyncBatchNorm for that,
    which PyTorch only has on GPUs).
    """

    name: Literal["small_cnn"]
    width: PositiveInt = 32
    norm: Literal["batch", "group"] = "batch"


class ResNetBackbone(Strict):
    """torchvision ResNet, randomly initialised; `cifar_stem` swaps the 7x7/maxpool stem
    for a 3x3 conv, as is standard for 32x32 images."""

    name: Literal["resnet18", "resnet34", "resnet50"]
    cifar_stem: bool = True


Backbone = Annotated[SmallCNNBackbone | ResNetBackbone, Field(discriminator="name")]


class ProjectorConfig(Strict):
    hidden_dim: PositiveInt = 512
    output_dim: PositiveInt = 128
    num_layers: PositiveInt = 2
    batch_norm: bool = True


# ------------------------------------------------------------------------------- methods


class RandomMethod(Strict):
    """No training: the untrained encoder, the control every method must beat."""

    name: Literal["random"]


class SimCLRMethod(Strict):
    name: Literal["simclr"]
    temperature: PositiveFloat = 0.5
    projector: ProjectorConfig = ProjectorConfig()
    gather_distributed: bool = True


class SupervisedMethod(Strict):
    """Cross-entropy on labels with the same views and schedule: the upper reference."""

    name: Literal["supervised"]
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0


class PredictorConfig(Strict):
    """BYOL's predictor q: an MLP from the projection back to the projection size."""

    hidden_dim: PositiveInt = 512
    num_layers: PositiveInt = 2
    batch_norm: bool = True


class BYOLMethod(Strict):
    """Online net + predictor regressing an EMA target; momentum rises to 1 (cosine)."""

    name: Literal["byol"]
    projector: ProjectorConfig = ProjectorConfig()
    predictor: PredictorConfig = PredictorConfig()
    base_momentum: Annotated[float, Field(ge=0, le=1)] = 0.99


class TripletMethod(Strict):
    """Truncated triplet over a BYOL architecture: one negative deputy per anchor.

    The deputy is the mean distance of negatives ranked `skip+1 .. skip+k` (nearest first).
    `skip: auto` picks the smallest r with P(Binomial(n, 1/expected_classes) <= r) >= 0.99
    for the n negatives of the (gathered) batch. Negatives come from the global batch when
    `gather_distributed` (the official code uses the per-GPU batch only).
    """

    name: Literal["triplet"]
    projector: ProjectorConfig = ProjectorConfig()
    predictor: PredictorConfig = PredictorConfig()
    base_momentum: Annotated[float, Field(ge=0, le=1)] = 0.99
    skip: NonNegativeInt | Literal["auto"] = 1
    k: PositiveInt = 9
    expected_classes: PositiveInt | None = None
    gamma: PositiveFloat = 2.0
    margin: NonNegativeFloat = 100.0
    gather_distributed: bool = True

    @model_validator(mode="after")
    def _auto_needs_classes(self) -> TripletMethod:
        if self.skip == "auto" and self.expected_classes is None:
            raise ValueError("skip: auto needs expected_classes (the Binomial argument's C)")
        return self


# Barlow Twins, VICReg, MoCo v2 (issue 25): the papers' defaults scaled for small images
# (ImageNet: 8192-wide projectors, a 65,536-key queue).
REDUNDANCY_PROJECTOR = ProjectorConfig(hidden_dim=1024, output_dim=256, num_layers=3)


class BarlowTwinsMethod(Strict):
    """Cross-correlation of the standardised projections of the two views over the global
    batch, driven to the identity: sum (1 - C_ii)^2 + lambda_offdiagonal sum C_ij^2."""

    name: Literal["barlow_twins"]
    projector: ProjectorConfig = REDUNDANCY_PROJECTOR
    lambda_offdiagonal: NonNegativeFloat = 5e-3  # the paper; official DSA code: 1 / D
    gather_distributed: bool = True


class VICRegMethod(Strict):
    """Invariance (MSE between the views), variance (std of each dimension >= 1) and
    covariance (off-diagonal entries -> 0) terms, over the global batch."""

    name: Literal["vicreg"]
    projector: ProjectorConfig = REDUNDANCY_PROJECTOR
    invariance_weight: NonNegativeFloat = 25.0
    variance_weight: NonNegativeFloat = 25.0
    covariance_weight: NonNegativeFloat = 1.0
    gather_distributed: bool = True


class MoCoMethod(Strict):
    """MoCo v2: InfoNCE of the online projections against the key encoder's (an EMA of the
    online encoder and projector) and a queue of past keys, symmetrised over the views.

    `queue_size` keys are kept per view; it must be a multiple of the global batch
    (`train.batch_size`) and at most the number of pretraining images. The momentum is
    `base_momentum` throughout (`momentum_schedule: constant`; the paper uses 0.999 at
    ImageNet scale) or rises to 1 as BYOL's (`cosine`).
    """

    name: Literal["moco"]
    projector: ProjectorConfig = ProjectorConfig(batch_norm=False)  # MoCo v2's MLP head
    temperature: PositiveFloat = 0.2
    queue_size: PositiveInt = 4096
    base_momentum: Annotated[float, Field(ge=0, le=1)] = 0.99
    momentum_schedule: Literal["constant", "cosine"] = "constant"


Method = Annotated[
    RandomMethod | SimCLRMethod | SupervisedMethod | BYOLMethod | TripletMethod
    | BarlowTwinsMethod | VICRegMethod | MoCoMethod,
    Field(discriminator="name"),
]


class DSARegulator(Strict):
    """Dynamic Semantic Adjuster: an extra loss on top of any embedding method.

    `prior` is the frozen network whose features define the prior relations P and the
    good-neighbour scores: `ema` (an EMA of the online encoder; the base method's target
    when it has one), `checkpoint` (`prior_path` = an encoder.pt of another run) or
    `torchvision` (ImageNet ResNet-18 weights read from `prior_path`, default the torch hub
    cache; never downloaded). `relation_norm: row_l1` reproduces the official code.
    `prior_precision` is that of the prior's gradient-free pass: `auto` is bf16 on a CUDA
    GPU that multiplies bf16 natively and fp32 elsewhere. The DSA loss itself runs in fp32.
    """

    name: Literal["dsa"]
    prior: Literal["ema", "checkpoint", "torchvision"] = "ema"
    prior_path: str | None = None
    prior_momentum: Annotated[float, Field(ge=0, le=1)] = 0.99
    prior_precision: Literal["auto", "fp32", "bf16"] = "auto"
    relation_norm: Literal["sigmoid", "row_l1"] = "sigmoid"
    lambda1: NonNegativeFloat = 1.0
    lambda2: NonNegativeFloat = 0.01
    prior_temperature: PositiveFloat = 0.5
    temperature: PositiveFloat = 0.5
    k: PositiveInt = 20
    mu: NonNegativeInt = 1
    gather_distributed: bool = True

    @model_validator(mode="after")
    def _checkpoint_needs_path(self) -> DSARegulator:
        if self.prior == "checkpoint" and not self.prior_path:
            raise ValueError("prior: checkpoint needs prior_path (an encoder.pt of another run)")
        return self


Regulator = Annotated[DSARegulator, Field(discriminator="name")]


# -------------------------------------------------------------------------------- views


class ViewsConfig(Strict):
    """Batched augmentations that make the two views (SimCLR recipe, scaled to the image).

    Pairs are (first view, second view) so BYOL's asymmetric recipe is expressible.
    """

    crop_scale: tuple[Probability, Probability] = (0.5, 1.0)
    crop_ratio: tuple[PositiveFloat, PositiveFloat] = (0.75, 1.3333)
    rotation_degrees: NonNegativeFloat = 0.0
    flip: Probability = 0.0
    color_jitter: Probability = 0.8
    brightness: NonNegativeFloat = 0.4
    contrast: NonNegativeFloat = 0.4
    saturation: NonNegativeFloat = 0.4
    grayscale: Probability = 0.2
    blur: tuple[Probability, Probability] = (0.0, 0.0)
    solarize: tuple[Probability, Probability] = (0.0, 0.0)
    hue: Annotated[float, Field(ge=0, le=0.5)] = 0.0  # BYOL: 0.1 (fraction of a turn)
    # Multi-resolution (truncated triplet's recipe, any method): each view of a batch is
    # resized to one random side in [low, high] x image side (ImageNet recipe: [0.43, 1.0]
    # for the first view, [0.57, 1.0] for the second); views of different sizes are
    # encoded in separate passes.
    multi_resolution: tuple[tuple[PositiveFloat, PositiveFloat],
                            tuple[PositiveFloat, PositiveFloat]] | None = None

    @model_validator(mode="after")
    def _ordered_ranges(self) -> ViewsConfig:
        if self.crop_scale[0] > self.crop_scale[1] or self.crop_scale[0] == 0:
            raise ValueError("crop_scale must be [low, high] with 0 < low <= high <= 1")
        if self.crop_ratio[0] > self.crop_ratio[1]:
            raise ValueError("crop_ratio must be [low, high] with low <= high")
        if self.multi_resolution and any(low > high for low, high in self.multi_resolution):
            raise ValueError("multi_resolution ranges must be [low, high] with low <= high")
        return self


# -------------------------------------------------------------------------------- training


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
    channels_last: bool = True  # CPU too: oneDNN steps ~30% faster (method_step_time)
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


class FinetuneConfig(Strict):
    """Fine-tuning of the whole encoder plus a fresh linear head on a transfer target
    (`epochs: 0`, the default, turns it off: the frozen probes only).

    AdamW with a per-step cosine decay of `lr` to 0 and no decay on biases and norm
    weights. Augmentation is deliberately light, as in the usual fine-tuning protocol: a
    random resized crop of `crop_scale` of the area (null: none) and a horizontal flip with
    probability `flip` (0 by default: digits and text are not mirror-symmetric).
    """

    epochs: NonNegativeInt = 0
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.01
    crop_scale: tuple[Probability, Probability] | None = (0.8, 1.0)
    flip: Probability = 0.0
    seed: int = 0

    @model_validator(mode="after")
    def _ordered_crop(self) -> FinetuneConfig:
        if self.crop_scale and (self.crop_scale[0] > self.crop_scale[1]
                                or self.crop_scale[0] == 0):
            raise ValueError("crop_scale must be [low, high] with 0 < low <= high <= 1")
        return self


class TransferTarget(Strict):
    """One transfer evaluation: probe the run's frozen encoder on another split pair, and
    optionally fine-tune the whole encoder there (`finetune`).

    `dataset` names a key of `datasets:` (default: the run's own). Splits default to the
    held-out classes (`transfer_train`/`transfer_test`) of the run's own dataset, and to
    `train`/`test` of any other dataset (e.g. Fashion-MNIST -> MNIST).
    """

    dataset: str | None = None
    train_split: str | None = None
    test_split: str | None = None
    finetune: FinetuneConfig = FinetuneConfig()


class RunConfig(Strict):
    """One pretraining run: a dataset, a backbone, a method, its views and schedule.

    A run is trained once per seed of the top-level `seeds` list; `seed` is filled in
    per training (`Params.seeded`) and is not written in params.yaml.
    """

    dataset: str
    seed: int = Field(0, json_schema_extra={"internal": True})  # one of `seeds`
    backbone: Backbone
    method: Method
    regulator: Regulator | None = None
    views: ViewsConfig = ViewsConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    # None: the dataset's held-out classes when it has some; [] turns transfer off
    transfer: list[TransferTarget] | None = None


# ------------------------------------------------------------------------------------ ray


class RayConfig(Strict):
    """Where pretraining runs. `local` starts an embedded single-machine Ray cluster."""

    address: str = "local"
    num_workers: PositiveInt = 1
    cpus_per_worker: PositiveInt = 1
    use_gpu: bool = False
    gpus_per_worker: PositiveFloat = 1.0
    storage_path: str = "ray_results"
    max_failures: NonNegativeInt = 0  # worker-group restarts from the last checkpoint


# ------------------------------------------------------------------------------ evaluation


class MinibatchProbeConfig(Strict):
    """The linear probe's optimiser when full-batch L-BFGS would exceed its memory budget:
    Adam on mini-batches, every candidate weight decay trained at once, the learning rate
    decaying to 0 by a cosine over `epochs` (once for the search, once for the refit)."""

    epochs: PositiveInt = 10  # passes over the data: once for the search, once for the refit
    batch_size: PositiveInt = 4096
    lr: PositiveFloat = 1e-2  # Adam's peak learning rate, decayed to 0 by a cosine


class LinearProbeConfig(Strict):
    """Logistic regression on frozen features; the weight decay is chosen among
    `weight_decays` on a seeded, stratified `val_fraction` of the training split.

    Full-batch L-BFGS while its working set (standardised features, logits and their
    gradient: N x (D + 2C) float32) fits `full_batch_gib` of evaluation-device memory (GPU
    when present, host otherwise); the mini-batch optimiser above it."""

    weight_decays: Annotated[list[NonNegativeFloat], Field(min_length=1)] = [
        1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    max_iter: PositiveInt = 300
    seed: int = 0
    tolerance: PositiveFloat = 1e-4  # L-BFGS stops when every gradient entry is below this
    full_batch_gib: PositiveFloat = 4.0  # L-BFGS's working set above which mini-batches are used
    minibatch: MinibatchProbeConfig = MinibatchProbeConfig()


class KNNConfig(Strict):
    """Cosine kNN with exp(sim / temperature) votes at each k (SSL protocol: 20 and 200),
    plus plain majority vote over `majority_k` neighbours (the DSA code's 5-NN)."""

    ks: Annotated[list[PositiveInt], Field(min_length=1)] = [20, 200]
    temperature: PositiveFloat = 0.07
    majority_k: PositiveInt = 5


class LowShotConfig(Strict):
    """The linear probe trained on seeded, stratified fractions of the training labels."""

    fractions: list[Annotated[float, Field(gt=0, lt=1)]] = [0.01, 0.1]
    seed: int = 0


class GeometryConfig(Strict):
    map_method: Literal["tsne", "pca"] = "tsne"
    max_points: PositiveInt = 2000
    seed: int = 0


class EvaluateConfig(Strict):
    """Evaluation stages stream their images shard by shard, `batch_size` at a time (per
    shard), so decoded images never fill memory: features, geometry's views, the test side
    of fine-tuning. Only fine-tuning's training split may be held, while it fits
    `memory_budget_mb`."""

    batch_size: PositiveInt = 512
    memory_budget_mb: PositiveInt = 2048
    """Host memory (MiB) a fine-tuning training split may take decoded (uint8): within it
    the split is held in memory and reshuffled each epoch; above it, it is streamed through
    a seeded shuffle buffer of `shuffle_buffer` images (a different, equally seeded order)."""
    shuffle_buffer: PositiveInt = 5000  # images buffered when fine-tuning streams its split
    linear: LinearProbeConfig = LinearProbeConfig()
    knn: KNNConfig = KNNConfig()
    low_shot: LowShotConfig = LowShotConfig()
    geometry: GeometryConfig = GeometryConfig()


# -------------------------------------------------------------------------------- report


class ReportConfig(Strict):
    """What the report compares. Runs are paired by seed: the same seed gives the same
    split, initialisation, data order and augmentation draws wherever the methods allow.

    Every run is compared with the `control` run (untrained encoder) and the `supervised`
    run of its dataset, and each `[run, baseline]` pair of `comparisons` is compared
    directly: the mean over seeds of the per-seed difference, with a paired-t interval at
    `confidence`, and a verdict (better, no detectable difference, worse) that needs at
    least 2 seeds, beside its Holm-adjusted verdict (the family: the listed comparisons x
    their metrics) and the smallest difference the comparison could detect. `gap_closed`
    is (acc - acc_control) / (acc_supervised - acc_control) in linear top-1;
    `reach_fraction` sets the accuracy, as a fraction of the supervised
    run's, from whose epoch on each run's online probe curve stays at or above it.
    """

    control: list[str] = []
    supervised: list[str] = []
    comparisons: list[tuple[str, str]] = []
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    reach_fraction: Annotated[float, Field(gt=0, le=1)] = 0.9
    # a difference in top-1 accuracy (0.01: one point) for which the report gives the
    # seeds a comparison needs to detect it with power 0.8, from its observed spread
    detect: Annotated[float, Field(gt=0, lt=1)] = 0.01


# ---------------------------------------------------------------------------------- root


class Params(Strict):
    datasets: dict[Annotated[str, Field(pattern=NAME_PATTERN)], DatasetConfig]
    runs: dict[Annotated[str, Field(pattern=NAME_PATTERN)], RunConfig]
    # every run is trained once per seed; paired across runs by the report
    seeds: Annotated[list[int], Field(min_length=1)] = [0]
    ray: RayConfig = RayConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()

    def seeded(self, run_name: str, seed: int) -> RunConfig:
        """The run's config for one of its seeds."""
        return self.runs[run_name].model_copy(update={"seed": seed})


def _cross_reference_errors(params: Params) -> list[tuple[str, str]]:
    """Checks that span sections, reported at the key a user would edit."""
    errors = _report_errors(params)
    if len(set(params.seeds)) != len(params.seeds):
        errors.append(("seeds", f"seeds must be distinct, got {params.seeds}"))
    for run_name, run in params.runs.items():
        if run.dataset not in params.datasets:
            known = ", ".join(sorted(params.datasets)) or "none"
            errors.append((f"runs.{run_name}.dataset",
                           f"unknown dataset '{run.dataset}' (defined in datasets: {known})"))
            continue
        if run.regulator is not None and run.method.name in {"random", "supervised"}:
            errors.append((f"runs.{run_name}.regulator",
                           "a regulator needs an embedding method (simclr, byol, triplet, "
                           f"barlow_twins, vicreg, moco), not '{run.method.name}'"))
        for index, target in enumerate(run.transfer or []):
            if target.dataset is not None and target.dataset not in params.datasets:
                known = ", ".join(sorted(params.datasets)) or "none"
                errors.append((f"runs.{run_name}.transfer.{index}.dataset",
                               f"unknown dataset '{target.dataset}' (defined in datasets: "
                               f"{known})"))
        errors += _data_split_errors(run_name, run, params.datasets[run.dataset])
    return errors


def _report_errors(params: Params) -> list[tuple[str, str]]:
    """The report's references and comparisons name runs; a verdict needs 2 seeds."""
    cfg, errors = params.report, []
    known = ", ".join(params.runs) or "none"
    for key in ("control", "supervised"):
        names = getattr(cfg, key)
        for index, name in enumerate(names):
            if name not in params.runs:
                errors.append((f"report.{key}.{index}", f"unknown run '{name}' (runs: {known})"))
        datasets = [params.runs[n].dataset for n in names if n in params.runs]
        for dataset in sorted({d for d in datasets if datasets.count(d) > 1}):
            errors.append((f"report.{key}", f"one run per dataset, got several for '{dataset}'"))
    for index, pair in enumerate(cfg.comparisons):
        key = f"report.comparisons.{index}"
        missing = [name for name in pair if name not in params.runs]
        if missing:
            errors.append((key, f"unknown run '{missing[0]}' (runs: {known})"))
        elif pair[0] == pair[1]:
            errors.append((key, f"compares run '{pair[0]}' with itself"))
        elif (params.runs[pair[0]].dataset != params.runs[pair[1]].dataset
              and all(params.runs[name].dataset in params.datasets for name in pair)):
            # (an unknown dataset is reported once, at the run's own key)
            errors.append((key, f"runs '{pair[0]}' and '{pair[1]}' use different datasets; "
                                "seeds pair only runs of one dataset"))
    if cfg.comparisons and len(params.seeds) < 2:
        errors.append(("report.comparisons", f"a verdict needs at least 2 seeds, "
                                             f"seeds has {len(params.seeds)}"))
    return errors


def _data_split_errors(run_name: str, run: RunConfig, dataset: DatasetConfig
                      ) -> list[tuple[str, str]]:
    """Pretraining reads `train`, and STL-10's `unlabeled` only where it exists and no
    labels are needed."""
    has_unlabeled = isinstance(dataset.source, STL10Source) and dataset.source.unlabeled
    errors = []
    for split in run.data.splits:
        key = f"runs.{run_name}.data.splits"
        if split not in ("train", "unlabeled"):
            errors.append((key, f"unknown split '{split}' (pretraining reads train, unlabeled)"))
        elif split == "unlabeled" and not has_unlabeled:
            errors.append((key, f"dataset '{run.dataset}' has no unlabeled split "
                                "(stl10 with unlabeled: true has one)"))
        elif split == "unlabeled" and isinstance(run.method, SupervisedMethod):
            errors.append((key, "the supervised method needs labels; drop 'unlabeled'"))
    return errors


# ------------------------------------------------------------------------------- loading


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (`1e-3` is a number, as DVC reads it) and no
    aliases (duplicate keys are found on the composed tree, by `_duplicate_keys`).

    Aliases (`*train`, `<<: *run`) are refused: `dvc exp run -S` rewrites params.yaml
    with them expanded or dropped, and an edit through one would be silently lost.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasUsed(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class _AliasUsed(Exception):
    def __init__(self, line: int):
        self.line = line


def _duplicate_keys(node: yaml.Node, path: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(full YAML path, message) of every key repeated within one mapping.

    Checked on the composed node tree before anything is constructed: PyYAML would keep
    the last value silently, and a constructor sees a key but not the path to it.
    """
    found: list[tuple[str, str]] = []
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, (*path, str(index)))
    elif isinstance(node, yaml.MappingNode):
        seen: set[tuple[str, str]] = set()
        for key_node, value_node in node.value:
            key_path = (*path, str(key_node.value))
            if (key_node.tag, key_node.value) in seen:
                found.append((".".join(key_path),
                              f"duplicate key (line {key_node.start_mark.line + 1})"))
            seen.add((key_node.tag, key_node.value))
            found += _duplicate_keys(value_node, key_path)
    return found


def _load_yaml(text: str, source: str) -> Any:
    """Parse params YAML; every duplicate key is an error named by its full path."""
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = _duplicate_keys(node)
        if duplicates:
            raise ParamsError(duplicates, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_path(loc: tuple[Any, ...], data: Any) -> str:
    """Map a pydantic error location onto the YAML keys the user wrote.

    Discriminated unions and validators insert labels (e.g. the tag `simclr`) into the
    location; walking the input data tells real keys from such labels.
    """
    parts: list[str] = []
    node = data
    for position, item in enumerate(loc):
        is_key = isinstance(node, dict) and item in node
        is_index = isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node)
        if is_key or is_index:
            node = node[item]
        elif isinstance(node, dict) and (item == node.get("name")
                                         or any(later in node for later in loc[position + 1:])):
            continue  # a label pydantic inserted (e.g. the union tag), not a key of the YAML
        elif isinstance(node, dict):
            node = None  # a missing or unknown key: name it, then stop walking
        else:
            continue
        parts.append(str(item))
    return ".".join(parts)


def _error_path(error: dict[str, Any], data: Any) -> str:
    """The YAML key an error is about: for an unknown union tag, the tag's own key."""
    path = _yaml_path(error["loc"], data)
    if error["type"] == "union_tag_invalid":
        tag_key = _tag_key(error.get("ctx", {}))
        path = f"{path}.{tag_key}" if path else tag_key
    return path


def _tag_key(ctx: dict[str, Any]) -> str:
    """The key a discriminated union is told apart by (pydantic quotes it: `'name'`)."""
    return str(ctx.get("discriminator", "name")).strip("'")


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _message(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    bounds = {"greater_than": ">", "greater_than_equal": ">=",
              "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        return f"must be {bounds[kind]} {_number(next(iter(ctx.values())))}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "union_tag_invalid":
        return f"unknown name '{ctx.get('tag')}', expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"needs a '{_tag_key(ctx)}' key"
    if kind in {"float_parsing", "float_type"}:
        return f"must be a number, got {error.get('input')!r}"
    if kind in {"int_parsing", "int_type", "int_from_float"}:
        return f"must be an integer, got {error.get('input')!r}"
    if kind in {"bool_parsing", "bool_type"}:
        return f"must be true or false, got {error.get('input')!r}"
    if kind == "string_pattern_mismatch":
        return "names may only use letters, digits, '_', '.' and '-'"
    message = error["msg"].removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def validate_params(data: Any, source: str = "params.yaml") -> Params:
    """Validate already-parsed params; raise ParamsError listing every problem."""
    if not isinstance(data, dict):
        raise ParamsError([("", "must be a mapping of sections (datasets, runs, ...)")], source)
    runs = data.get("runs")
    seeded = [name for name, run in runs.items() if isinstance(run, dict) and "seed" in run] \
        if isinstance(runs, dict) else []
    if seeded:
        raise ParamsError([(f"runs.{name}.seed", "seeds are set once for all runs, in the "
                                                  "top-level `seeds:` list") for name in seeded],
                          source)
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        errors = [(_error_path(e, data), _message(e)) for e in exc.errors()]
        raise ParamsError(errors, source) from None
    errors = _cross_reference_errors(params)
    if errors:
        raise ParamsError(errors, source)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError with YAML paths on any problem."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError([("", "file not found")], source) from None
    try:
        data = _load_yaml(text, source)
    except _AliasUsed as exc:
        raise ParamsError([("", f"line {exc.line}: YAML aliases (*name, <<: *name) are not "
                                "supported; write the values out (seeds: lists the seeds "
                                "once)")], source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParamsError([("", f"invalid YAML{where}: {problem}")], source) from None
    return validate_params(data, source)

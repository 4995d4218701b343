"""`runs.<run>`: the backbone, the method, the optional regulator and the views."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.params.base import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Strict,
)


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


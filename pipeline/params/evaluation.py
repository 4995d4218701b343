"""`evaluate:` and a run's `transfer:` list: the probes, geometry, fine-tuning and the
transfer targets (what the evaluation stages compute)."""

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


"""The schema of params.yaml, validated by pydantic.

Every stage loads the whole file through `load_params` before doing anything, so a typo
anywhere (including one made with `dvc exp run -S`) stops the pipeline with the YAML path
of the bad value instead of silently training the wrong thing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class ParamsError(Exception):
    """Invalid params: `errors` holds `(yaml_path, message)` pairs, one per problem."""

    def __init__(self, errors: list[tuple[str, str]], source: str = "params.yaml"):
        self.errors = errors
        self.source = source
        super().__init__("\n".join(self.lines()))

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


Source = Annotated[DigitsSource, Field(discriminator="name")]


class SplitConfig(Strict):
    """How a source without an official split is divided, and which classes are held out.

    Held-out classes never reach pretraining or the in-domain probe; the transfer stage
    probes on them (pretrain on some classes, transfer to the others).
    """

    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.3
    heldout_classes: list[NonNegativeInt] = []
    seed: int = 0


class ShardConfig(Strict):
    samples_per_shard: PositiveInt = 1000


class DatasetConfig(Strict):
    source: Source
    split: SplitConfig = SplitConfig()
    shards: ShardConfig = ShardConfig()


# ------------------------------------------------------------------------------ networks


class SmallCNNBackbone(Strict):
    """A four-layer convnet for tiny images (digits, MNIST-sized)."""

    name: Literal["small_cnn"]
    width: PositiveInt = 32


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


Method = Annotated[
    RandomMethod | SimCLRMethod | SupervisedMethod, Field(discriminator="name")
]


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

    @model_validator(mode="after")
    def _ordered_ranges(self) -> ViewsConfig:
        if self.crop_scale[0] > self.crop_scale[1] or self.crop_scale[0] == 0:
            raise ValueError("crop_scale must be [low, high] with 0 < low <= high <= 1")
        if self.crop_ratio[0] > self.crop_ratio[1]:
            raise ValueError("crop_ratio must be [low, high] with low <= high")
        return self


# -------------------------------------------------------------------------------- training


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-6
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    warmup_epochs: NonNegativeInt = 0
    schedule: Literal["cosine", "constant"] = "cosine"


class TrainConfig(Strict):
    epochs: NonNegativeInt = 100
    batch_size: PositiveInt = 256
    optimizer: OptimizerConfig = OptimizerConfig()


class TransferTarget(Strict):
    """One transfer evaluation: probe the run's frozen encoder on another split pair.

    `dataset` names a key of `datasets:` (default: the run's own). Splits default to the
    held-out classes (`transfer_train`/`transfer_test`) of the run's own dataset, and to
    `train`/`test` of any other dataset (e.g. Fashion-MNIST -> MNIST).
    """

    dataset: str | None = None
    train_split: str | None = None
    test_split: str | None = None


class RunConfig(Strict):
    """One pretraining run: a dataset, a backbone, a method, its views and schedule."""

    dataset: str
    seed: int = 0
    backbone: Backbone
    method: Method
    views: ViewsConfig = ViewsConfig()
    train: TrainConfig = TrainConfig()
    # None: the dataset's held-out classes when it has some; [] turns transfer off
    transfer: list[TransferTarget] | None = None


# ------------------------------------------------------------------------------------ ray


class RayConfig(Strict):
    """Where pretraining runs. `local` starts an embedded single-machine Ray cluster."""

    address: str = "local"
    num_workers: PositiveInt = 1
    cpus_per_worker: PositiveInt = 1
    use_gpu: bool = False
    storage_path: str = "ray_results"


# ------------------------------------------------------------------------------ evaluation


class LinearProbeConfig(Strict):
    """Logistic regression on frozen features; the weight decay is chosen among
    `weight_decays` on a seeded, stratified `val_fraction` of the training split."""

    weight_decays: Annotated[list[NonNegativeFloat], Field(min_length=1)] = [
        1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    max_iter: PositiveInt = 300
    seed: int = 0


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
    batch_size: PositiveInt = 512
    linear: LinearProbeConfig = LinearProbeConfig()
    knn: KNNConfig = KNNConfig()
    low_shot: LowShotConfig = LowShotConfig()
    geometry: GeometryConfig = GeometryConfig()


# ---------------------------------------------------------------------------------- root


class Params(Strict):
    datasets: dict[Annotated[str, Field(pattern=NAME_PATTERN)], DatasetConfig]
    runs: dict[Annotated[str, Field(pattern=NAME_PATTERN)], RunConfig]
    ray: RayConfig = RayConfig()
    evaluate: EvaluateConfig = EvaluateConfig()


def _cross_reference_errors(params: Params) -> list[tuple[str, str]]:
    """Checks that span sections, reported at the key a user would edit."""
    errors = []
    for run_name, run in params.runs.items():
        if run.dataset not in params.datasets:
            known = ", ".join(sorted(params.datasets)) or "none"
            errors.append((f"runs.{run_name}.dataset",
                           f"unknown dataset '{run.dataset}' (defined in datasets: {known})"))
        for index, target in enumerate(run.transfer or []):
            if target.dataset is not None and target.dataset not in params.datasets:
                known = ", ".join(sorted(params.datasets)) or "none"
                errors.append((f"runs.{run_name}.transfer.{index}.dataset",
                               f"unknown dataset '{target.dataset}' (defined in datasets: "
                               f"{known})"))
    return errors


# ------------------------------------------------------------------------------- loading


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (`1e-3` is a number, as DVC reads it) and no
    silently overwritten duplicate keys."""


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


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        self.key, self.line = key, line


def _construct_mapping(loader: _YamlLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *run` (repeat a run over seeds); the merge itself is PyYAML's
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKey(str(key), key_node.start_mark.line + 1)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_path(loc: tuple[Any, ...], data: Any) -> str:
    """Map a pydantic error location onto the YAML keys the user wrote.

    Discriminated unions and validators insert labels (e.g. the tag `simclr`) into the
    location; walking the input data tells real keys from such labels.
    """
    parts: list[str] = []
    node = data
    for position, item in enumerate(loc):
        in_dict = isinstance(node, dict) and item in node
        in_list = isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node)
        if in_dict or in_list:
            node = node[item]
        elif isinstance(node, dict) and any(later in node for later in loc[position + 1:]):
            continue  # a label pydantic inserted, not a key of the YAML
        elif isinstance(node, dict):
            node = None  # a missing or unknown key: name it, then stop walking
        else:
            continue
        parts.append(str(item))
    return ".".join(parts)


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
        return f"needs a '{ctx.get('discriminator', 'name').strip(chr(39))}' key"
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
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        errors = [(_yaml_path(e["loc"], data), _message(e)) for e in exc.errors()]
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
        data = yaml.load(text, Loader=_YamlLoader)
    except _DuplicateKey as exc:
        raise ParamsError([(exc.key, f"duplicate key (line {exc.line})")], source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParamsError([("", f"invalid YAML{where}: {problem}")], source) from None
    return validate_params(data, source)

"""`datasets:`: where a dataset's images come from, how they are split and sharded, and
where the shards are published for a cluster."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline.params.base import NonNegativeInt, PositiveFloat, PositiveInt, Strict


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
    class folders directly is one split, divided by `split`). Any format PIL reads. `path`
    is a local directory or an object-store prefix (`s3://bucket/imagenet`, gs://, ...),
    listed by the shard stage and read by its tasks with the store's usual credentials.

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
    samples_per_shard: PositiveInt = 1000  # images per shard; the last of a split holds the rest


# The URLs `datasets.<name>.publish` accepts (pipeline.data.storage reads and writes them):
# pyarrow's filesystems (read and written) and http(s) (read only, through fsspec).
FILESYSTEM_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "file")
HTTP_SCHEMES = ("http", "https")


def _check_location(value: str, schemes: tuple[str, ...]) -> str:
    """An absolute directory, or a URL whose scheme is one of `schemes`."""
    if value.startswith("/") or ("://" in value
                                 and urlsplit(value).scheme.lower() in schemes):
        return value
    raise ValueError(f"'{value}' must be an absolute directory or a URL "
                     f"({', '.join(f'{s}://' for s in schemes)})")


class ReadConfig(Strict):
    """How the stages read published shards (pipeline.data.storage.ReadPolicy).

    A transient failure (HTTP 429 or 5xx, a reset connection, a timeout) is retried after a
    wait drawn uniformly below min(backoff_max_s, backoff_s * 2^retry), at most `attempts`
    tries per request in all, and counted (`read_retries` in the pretraining history); a
    read still failing then stops the stage with one line naming the URL. A shard is held
    whole, at most `shard_buffer_mb` (host memory, per reading process), so that its sha256
    is checked before any of its samples is used. None of these keys changes a result, so
    no stage reruns when they change.
    """

    attempts: PositiveInt = 6
    backoff_s: PositiveFloat = 0.5
    backoff_max_s: PositiveFloat = 30.0
    timeout_s: PositiveFloat = 60.0  # connecting, and waiting for the next bytes
    shard_buffer_mb: PositiveInt = 1024


class PublishConfig(Strict):
    """Shards where every node of a cluster reads them: with `url` set, `shard@<dataset>`
    writes the shards straight there (data/shards/<dataset> keeps only the manifest, no
    image), and the later stages read them from `read_url` (default: `url`), after
    checking that the manifest found there is the local one. Credentials and endpoints
    come from each store's usual environment variables (AWS_*,
    GOOGLE_APPLICATION_CREDENTIALS), never from here.
    """

    url: str  # s3://bucket/prefix, gs://..., hdfs://..., abfs://..., file:///dir or /dir
    read_url: str | None = None  # null: url; also http(s)://host/prefix
    read: ReadConfig = ReadConfig()

    @field_validator("url")
    @classmethod
    def _writable(cls, value: str) -> str:
        return _check_location(value, FILESYSTEM_SCHEMES)

    @field_validator("read_url")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is None:
            return value
        return _check_location(value, (*FILESYSTEM_SCHEMES, *HTTP_SCHEMES))


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


"""shard@<dataset>: a source -> data/shards/<dataset>/{split}-NNNNNN.tar + manifest.json,
written by Ray tasks (one per shard) on the cluster of `ray:` (with `ray.address: local`,
the one `scripts/repro.sh` holds open or an embedded one); with
`datasets.<dataset>.publish.url`, each task writes its shard straight there (no local
copy) and data/shards/<dataset> holds the manifest only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.cluster import init_ray
from pipeline.data.ray_shards import on_ray
from pipeline.data.shards import write_shards
from pipeline.data.sources import cap_per_class, load_source, make_splits
from pipeline.data.storage import UploadError, check_bucket
from pipeline.errors import UserError
from pipeline.io import atomic_dir
from pipeline.layout import SHARDS_DIR
from pipeline.params.base import ParamsError
from pipeline.params.data import DatasetConfig
from pipeline.params.ray import RayConfig, load_ray
from pipeline.resolved.shard import ShardParams
from stages._common import Stage, run_stage

STAGE = Stage("shard", ShardParams, item="datasets", where=load_ray)


@contextmanager
def source_files(name: str, cfg: DatasetConfig) -> Iterator[None]:
    """A problem with a file of the source names the key that points at it, and the file."""
    try:
        yield
    except ParamsError:
        raise
    except UserError as exc:
        if getattr(cfg.source, "path", None) is None:
            raise
        raise ParamsError([(f"datasets.{name}.source.path", str(exc))]) from None


@contextmanager
def uploads(name: str) -> Iterator[None]:
    """A shard that cannot be written to `publish.url` names that key, and the URL."""
    try:
        yield
    except UploadError as exc:
        raise ParamsError([(f"datasets.{name}.publish.url", str(exc))]) from None


def main(params: ShardParams, name: str, ray: RayConfig) -> None:
    cfg = params.dataset
    with source_files(name, cfg):
        source = load_source(cfg.source, cfg.image_size)
    unknown = sorted(set(cfg.split.heldout_classes) - set(range(len(source.class_names))))
    key = f"datasets.{name}.split.heldout_classes"
    if unknown:
        raise ParamsError([(key, f"classes {unknown} do not exist "
                                 f"({len(source.class_names)} classes)")])
    if len(cfg.split.heldout_classes) >= len(source.class_names):
        raise ParamsError([(key, "every class is held out, nothing is left to pretrain on")])
    splits = cap_per_class(make_splits(source, cfg.split), cfg.max_per_class, cfg.split.seed)
    upload_url = params.upload_url
    if upload_url:
        check_bucket(upload_url, f"datasets.{name}.publish.url")
    init_ray(ray)
    with atomic_dir(SHARDS_DIR / name) as out, source_files(name, cfg), uploads(name):
        manifest = write_shards(splits, source.class_names, out, cfg.shards.samples_per_shard,
                                cfg.source.model_dump(mode="json"), decoding=source.decoding,
                                storage=source.storage, image_size=cfg.image_size,
                                max_per_class=cfg.max_per_class, upload_url=upload_url,
                                runner=on_ray)
    counts = ", ".join(f"{split} {info['count']}" for split, info in manifest["splits"].items())
    shape = "x".join(str(side) for side in manifest["image_shape"])
    print(f"shard {name}: {manifest['total']} images of {shape} ({counts}) -> "
          f"{upload_url or SHARDS_DIR / name}")


if __name__ == "__main__":
    run_stage(main, STAGE)

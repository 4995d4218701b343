"""features@<run>: frozen features of every split the run's evaluations read, per seed,
extracted by Ray tasks (one per input shard) on the cluster of `ray:` (with
`ray.address: local`, the one `scripts/repro.sh` holds open or an embedded one).

-> features/<run>/seed_<s>/<dataset>/<split>/ (a manifest and one .npz feature shard per
input shard; pipeline/evaluate/features.py), read by the probe, transfer and geometry
stages. The driver loads the encoders and writes feature shards; it never holds images.
"""

from __future__ import annotations

from pipeline.cluster import init_ray
from pipeline.data.reader import split_shards
from pipeline.evaluate.ray_features import Resources, SplitJob, write_split_features
from pipeline.io import atomic_dir
from pipeline.layout import encoder_path, features_dir, features_split_dir
from pipeline.located import Located, locate
from pipeline.nets.backbones import load_encoder
from pipeline.params.ray import RayConfig
from pipeline.resolved.features import FeaturesParams
from stages._common import Stage, run_stage

STAGE = Stage("features", FeaturesParams, item="runs", where=locate)


def task_resources(ray: RayConfig) -> Resources:
    """A task's share of the cluster: `ray.cpus_per_worker` CPUs, and
    `ray.gpus_per_worker` of a GPU with `ray.use_gpu`."""
    return Resources(ray.cpus_per_worker, ray.gpus_per_worker if ray.use_gpu else 0.0)


def main(params: FeaturesParams, name: str, located: Located) -> None:
    encoders = {str(encoder_path(name, seed)): load_encoder(encoder_path(name, seed))
                for seed in params.seeds}
    sources = {(dataset, split): split_shards(located.where.shards(dataset), [split])
               for dataset, split in params.splits}
    init_ray(located.ray)
    with atomic_dir(features_dir(name)) as out:
        splits = [SplitJob(str(encoder_path(name, seed)), shards, decoding,
                           out / features_split_dir(seed, dataset, split))
                  for seed in params.seeds
                  for (dataset, split), (shards, _, decoding) in sources.items()]
        write_split_features(encoders, splits, params.batch_size,
                             task_resources(located.ray))
        for seed in params.seeds:
            for (dataset, split), (_, count, _) in sources.items():
                print(f"features {name} seed {seed}: {dataset}/{split} {count} images",
                      flush=True)


if __name__ == "__main__":
    run_stage(main, STAGE)

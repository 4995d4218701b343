"""features@<run>: frozen features of every split the run's evaluations read, per seed.

-> features/<run>/seed_<s>/<dataset>/<split>.pt ({"features": [N, D] float32,
"labels": [N]}), read by the probe, transfer and geometry stages.
"""

from __future__ import annotations

from pipeline.evaluate.features import save_features
from pipeline.io import atomic_dir
from pipeline.layout import encoder_path, features_dir, features_file
from pipeline.nets.backbones import load_encoder
from pipeline.nets.extract import split_features
from pipeline.resolved.features import FeaturesParams
from pipeline.where import Where, load_where
from stages._common import Stage, run_stage

STAGE = Stage("features", FeaturesParams, item="runs", where=load_where)


def main(params: FeaturesParams, name: str, where: Where) -> None:
    encoders = {seed: load_encoder(encoder_path(name, seed)) for seed in params.seeds}
    shards = {dataset: where.shards(dataset) for dataset in params.datasets}
    with atomic_dir(features_dir(name)) as out:
        for seed, encoder in encoders.items():
            for dataset, split in params.splits:
                features, labels = split_features(encoder, shards[dataset], split,
                                                  params.batch_size)
                path = out / features_file(seed, dataset, split)
                path.parent.mkdir(parents=True, exist_ok=True)
                save_features(path, features, labels)
                print(f"features {name} seed {seed}: {dataset}/{split} "
                      f"{tuple(features.shape)}", flush=True)


if __name__ == "__main__":
    run_stage(main, STAGE)

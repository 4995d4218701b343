"""features@<run>: frozen features of every split the run's evaluations read, per seed.

-> features/<run>/seed_<s>/<dataset>/<split>.pt ({"features": [N, D] float32,
"labels": [N]}), read by the probe, transfer and geometry stages.
"""

from __future__ import annotations

from pipeline.data.publish import shard_location
from pipeline.evaluate.features import save_features, split_features
from pipeline.evaluate.transfer import feature_splits
from pipeline.io import atomic_dir
from pipeline.layout import FEATURES_DIR, encoder_path, seed_dir
from pipeline.nets.backbones import load_encoder
from pipeline.params import Params
from stages._common import run_stage


def main(params: Params, name: str) -> None:
    encoders = {seed: load_encoder(encoder_path(name, seed)) for seed in params.seeds}
    splits = feature_splits(params, name)
    shards = {dataset: shard_location(params, dataset) for dataset, _ in splits}
    with atomic_dir(FEATURES_DIR / name) as out:
        for seed, encoder in encoders.items():
            for dataset, split in splits:
                features, labels = split_features(encoder, shards[dataset], split,
                                                  params.evaluate.batch_size)
                directory = out / seed_dir(seed) / dataset
                directory.mkdir(parents=True, exist_ok=True)
                save_features(directory / f"{split}.pt", features, labels)
                print(f"features {name} seed {seed}: {dataset}/{split} "
                      f"{tuple(features.shape)}", flush=True)


if __name__ == "__main__":
    run_stage(main, item="runs")

"""features@<run>: frozen features of every split the run's evaluations read, cached once.

-> features/<run>/<dataset>/<split>.pt ({"features": [N, D] float32, "labels": [N]}), read
by the probe, transfer and geometry stages.
"""

from __future__ import annotations

from pipeline.evaluate.features import save_features, split_features
from pipeline.evaluate.transfer import feature_splits
from pipeline.io import atomic_dir
from pipeline.nets.backbones import load_encoder
from pipeline.params import Params
from stages._common import FEATURES_DIR, dataset_shards, encoder_path, run_stage


def main(params: Params, name: str) -> None:
    encoder = load_encoder(encoder_path(name))
    splits = feature_splits(params, name)
    shards = {dataset: dataset_shards(params, dataset) for dataset, _ in splits}
    with atomic_dir(FEATURES_DIR / name) as out:
        for dataset, split in splits:
            features, labels = split_features(encoder, shards[dataset], split,
                                              params.evaluate.batch_size)
            (out / dataset).mkdir(exist_ok=True)
            save_features(out / dataset / f"{split}.pt", features, labels)
            print(f"features {name}: {dataset}/{split} {tuple(features.shape)}")


if __name__ == "__main__":
    run_stage(main, item="runs")

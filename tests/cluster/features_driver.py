"""A driver process for tests/cluster/test_ray_features.py: joins the cluster at argv[1],
extracts the features of split argv[3] of the shards in argv[2] with one Ray task per
shard, and saves them to argv[4]. A user error is one line and exit 2, as in a stage."""

from __future__ import annotations

import sys

import ray
import torch

from pipeline.data.reader import split_shards
from pipeline.errors import UserError
from pipeline.evaluate.ray_features import ray_shard_features
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import SmallCNNBackbone


def encoder() -> Encoder:
    torch.manual_seed(0)
    return Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])


def main(address: str, shard_dir: str, split: str, out: str) -> None:
    ray.init(address=address, configure_logging=False)
    shards, _, decoding = split_shards(shard_dir, [split])
    features, labels = ray_shard_features(encoder(), shards, decoding, batch_size=64)
    torch.save({"features": features, "labels": labels}, out)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:5])
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

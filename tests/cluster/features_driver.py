"""A driver process for tests/cluster/test_ray_features.py, as the features stage drives
Ray: joins the cluster at argv[1] and writes the feature shards of split argv[3] of the
shards in argv[2] to the directory argv[4] (whole or not at all). With argv[5], the
encoder is loaded from that file instead of the test's fixed one. A user error is one
line and exit 2, as in a stage."""

from __future__ import annotations

import torch
from driver import run_driver

from pipeline.data.reader import split_shards
from pipeline.evaluate.ray_features import SplitJob, write_split_features
from pipeline.io import atomic_dir
from pipeline.nets.backbones import Encoder, load_encoder
from pipeline.params.methods import SmallCNNBackbone

BATCH = 64


def encoder() -> Encoder:
    torch.manual_seed(0)
    return Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])


def extract(shard_dir: str, split: str, out: str, encoder_file: str = "") -> None:
    model = load_encoder(encoder_file) if encoder_file else encoder()
    name = encoder_file or "fixed encoder"
    shards, _, decoding = split_shards(shard_dir, [split])
    with atomic_dir(out) as directory:
        write_split_features({name: model}, [SplitJob(name, shards, decoding, directory)],
                             BATCH)


if __name__ == "__main__":
    run_driver(extract)

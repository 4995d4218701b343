"""geometry@<run>: crowding and label-free metrics (on cached test features), alignment and
LiDAR (on two augmented views of each test image), 2-D map, histograms."""

from __future__ import annotations

import torch

from pipeline.data.shards import read_manifest, read_split
from pipeline.data.views import make_views
from pipeline.evaluate.features import extract_features, load_features
from pipeline.evaluate.geometry import alignment, cosine_similarity_pairs, geometry_metrics
from pipeline.evaluate.plots import embed_2d, save_map, save_similarity_histograms
from pipeline.evaluate.spectrum import lidar
from pipeline.io import write_json
from pipeline.nets.backbones import load_encoder
from pipeline.params import Params
from stages._common import (
    METRICS_DIR,
    PLOTS_DIR,
    encoder_path,
    features_path,
    run_stage,
    shard_dir,
)


def main(params: Params, name: str) -> None:
    cfg = params.evaluate
    run = params.runs[name]
    features, labels = load_features(features_path(name, run.dataset, "test"))
    metrics = geometry_metrics(features, labels)
    # alignment and LiDAR need two augmented views of each test image: they run the encoder
    encoder = load_encoder(encoder_path(name))
    data = read_split(shard_dir(params, name), "test")
    generator = torch.Generator().manual_seed(cfg.geometry.seed)
    views = torch.stack([extract_features(encoder, view, cfg.batch_size)
                         for view in make_views(data.images, run.views, generator)], dim=1)
    metrics["alignment"] = alignment(views[:, 0], views[:, 1])
    metrics["lidar"] = lidar(views)
    write_json(METRICS_DIR / "geometry" / f"{name}.json", metrics)

    class_names = read_manifest(shard_dir(params, name))["class_names"]
    keep = torch.randperm(len(features), generator=generator)[: cfg.geometry.max_points]
    points, labels = features[keep].numpy(), labels[keep].numpy()
    coordinates = embed_2d(points, cfg.geometry.map_method, cfg.geometry.seed)
    out = PLOTS_DIR / "geometry" / name
    save_map(coordinates, labels, class_names, f"{name}: test features "
             f"({cfg.geometry.map_method})", out / "map.png")
    same, different = cosine_similarity_pairs(points, labels)
    save_similarity_histograms(same, different, f"{name}: cosine similarity of test pairs",
                               out / "similarity.png")
    print(f"geometry {name}: crowding {metrics['crowding_index']:.4f} "
          f"effective rank {metrics['effective_rank']:.1f} RankMe {metrics['rankme']:.1f}")


if __name__ == "__main__":
    run_stage(main, item="runs")

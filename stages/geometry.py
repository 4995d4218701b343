"""geometry@<run>: crowding and label-free metrics (on cached test features), alignment and
LiDAR (on two augmented views of each test image) per seed, and the 2-D map and similarity
histograms of the first seed (figures illustrate; the metrics are what seeds are compared
on). -> results/geometry/<run>.json ({seed_<s>: metrics}), its headline for `dvc metrics`
metrics/geometry/<run>.json (crowding, NC1, RankMe per seed and their mean),
plots/geometry/<run>/{map,similarity}.png.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.data.reader import split_batches
from pipeline.data.shards import read_manifest
from pipeline.data.views import make_views
from pipeline.evaluate.features import load_features
from pipeline.evaluate.geometry import alignment, cosine_similarity_pairs, geometry_metrics
from pipeline.evaluate.plots import embed_2d, save_map, save_similarity_histograms
from pipeline.evaluate.spectrum import lidar
from pipeline.io import atomic_dir
from pipeline.layout import (
    encoder_path,
    features_path,
    geometry_plots_dir,
    metrics_path,
    results_path,
)
from pipeline.metrics.base import write_headline, write_seeded
from pipeline.metrics.geometry import GeometryMetrics, geometry_headline
from pipeline.nets.backbones import Encoder, load_encoder
from pipeline.nets.extract import RowBlocks, extract_features
from pipeline.params.methods import ViewsConfig
from pipeline.resolved.geometry import GeometryParams
from pipeline.where import Where, load_where
from stages._common import Stage, run_stage

STAGE = Stage("geometry", GeometryParams, item="runs", where=load_where)


def seed_geometry(params: GeometryParams, name: str, seed: int, where: Where, out: Path | None
                  ) -> dict[str, float]:
    """One seed's metrics; its figures go to `out` (none when None)."""
    features, labels = load_features(features_path(name, seed, params.dataset, "test"))
    metrics = geometry_metrics(features, labels)
    # alignment and LiDAR need two augmented views of each test image: they run the encoder
    encoder = load_encoder(encoder_path(name, seed))
    generator = torch.Generator().manual_seed(params.geometry.seed)
    views = view_features(encoder, where.shards(params.dataset), params.views,
                          params.batch_size, generator)
    metrics["alignment"] = alignment(views[:, 0], views[:, 1])
    metrics["lidar"] = lidar(views)
    if out is not None:
        save_figures(params, name, seed, where, features, labels, generator, out)
    print(f"geometry {name} seed {seed}: crowding {metrics['crowding_index']:.4f} "
          f"effective rank {metrics['effective_rank']:.1f} RankMe {metrics['rankme']:.1f}",
          flush=True)
    return metrics


def view_features(encoder: Encoder, shard_dir: str, views: ViewsConfig, batch_size: int,
                  generator: torch.Generator) -> torch.Tensor:
    """Features [N, 2, D] of two augmented views of every test image, streamed: one
    per-shard batch of images (and its views) in memory at a time."""
    features = RowBlocks()
    for batch in split_batches(shard_dir, "test", batch_size):
        features.append(torch.stack([extract_features(encoder, view, batch_size)
                                     for view in make_views(batch.images, views, generator)],
                                    dim=1))
    return features.tensor(torch.empty(0, 2, encoder.feature_dim))


def save_figures(params: GeometryParams, name: str, seed: int, where: Where,
                 features: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                 out: Path) -> None:
    """The 2-D map of (at most `max_points`) test features and the similarity histograms."""
    cfg = params.geometry
    class_names = read_manifest(where.shards(params.dataset))["class_names"]
    keep = torch.randperm(len(features), generator=generator)[: cfg.max_points]
    points, kept_labels = features[keep].numpy(), labels[keep].numpy()
    coordinates = embed_2d(points, cfg.map_method, cfg.seed)
    title = f"{name} seed {seed}"
    save_map(coordinates, kept_labels, class_names,
             f"{title}: test features ({cfg.map_method})", out / "map.png")
    same, different = cosine_similarity_pairs(points, kept_labels)
    save_similarity_histograms(same, different, f"{title}: cosine similarity of test pairs",
                               out / "similarity.png")


def main(params: GeometryParams, name: str, where: Where) -> None:
    with atomic_dir(geometry_plots_dir(name)) as out:
        per_seed = {seed: seed_geometry(params, name, seed, where,
                                        out if seed == params.seeds[0] else None)
                    for seed in params.seeds}
        validated = {seed: GeometryMetrics.model_validate(metrics)
                     for seed, metrics in per_seed.items()}
        write_seeded(results_path("geometry", name), validated)
        write_headline(metrics_path("geometry", name),
                       {seed: geometry_headline(m) for seed, m in validated.items()})


if __name__ == "__main__":
    run_stage(main, STAGE)

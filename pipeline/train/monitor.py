"""What pretraining watches on rank 0: online kNN and linear probes every
`train.monitor.every_epochs`, and a collapse check of every epoch's last batch.

The probes use one fixed weight decay so that successive epochs are comparable and cheap;
the probe stage's validated choice stays the final word.
"""

from __future__ import annotations

import math

import torch

from pipeline.classify import knn_probe, linear_top1
from pipeline.nets.backbones import Encoder
from pipeline.nets.extract import extract_features, split_features
from pipeline.params.training import MonitorConfig, RunConfig
from pipeline.spectrum import rankme, std_of_l2_normalized


@torch.no_grad()
def monitor_probes(encoder: Encoder, shard_dir: str, run: RunConfig, batch_size: int,
                   device: torch.device) -> dict[str, float]:
    """Online kNN and linear top-1 (train split -> test split), on features extracted once,
    and the label-free RankMe and feature std of the same train features.

    The first `monitor.max_samples` images of each split are streamed through the encoder
    in per-shard batches of `batch_size`, each time: only their features are held.

    The linear probe uses one fixed weight decay (`train.monitor.linear_weight_decay`), so
    successive epochs are comparable and cheap; the probe stage's validated choice stays
    the final word.
    """
    cfg = run.train.monitor
    was_training = encoder.training
    bank_x, bank_y = split_features(encoder, shard_dir, "train", batch_size, device,
                                    cfg.max_samples)
    query_x, query_y = split_features(encoder, shard_dir, "test", batch_size, device,
                                      cfg.max_samples)
    encoder.train(was_training)
    return {"knn_top1": knn_probe(bank_x, bank_y, query_x, query_y, cfg.k, cfg.temperature),
            "linear_top1": linear_top1(bank_x, bank_y, query_x, query_y,
                                       cfg.linear_weight_decay, cfg.linear_max_iter),
            "rankme": rankme(bank_x), "feature_std": std_of_l2_normalized(bank_x)}


@torch.no_grad()
def batch_features(encoder: Encoder, images: torch.Tensor, device: torch.device
                   ) -> torch.Tensor:
    """The encoder's features of one batch in eval mode (BatchNorm statistics untouched),
    leaving the encoder in the mode it was in."""
    was_training = encoder.training
    features = extract_features(encoder, images, len(images), device)
    encoder.train(was_training)
    return features


def check_collapse(features: torch.Tensor, cfg: MonitorConfig
                   ) -> tuple[dict[str, float], list[str]]:
    """RankMe and feature std of one batch's features [N, D], and why they say collapse
    (empty when healthy): std below `collapse_std_fraction` / sqrt(D), or RankMe below
    `collapse_rank_fraction` * min(N, D). NaN statistics (a diverging run) say nothing:
    the loss check reports that."""
    n, dim = features.shape
    stats = {"batch_rankme": rankme(features),
             "batch_feature_std": std_of_l2_normalized(features)}
    std_floor = cfg.collapse_std_fraction / math.sqrt(dim)
    rank_floor = cfg.collapse_rank_fraction * min(n, dim)
    reasons = []
    if stats["batch_feature_std"] < std_floor:
        reasons.append(f"feature std {stats['batch_feature_std']:.3g} < {std_floor:.3g} "
                       f"({cfg.collapse_std_fraction:g}/sqrt({dim}))")
    if stats["batch_rankme"] < rank_floor:
        reasons.append(f"RankMe {stats['batch_rankme']:.3g} < {rank_floor:.3g} "
                       f"({cfg.collapse_rank_fraction:g} x min({n}, {dim}))")
    return stats, reasons


def collapse_warning(run_name: str, epoch: int, reasons: list[str]) -> str:
    return (f"warning: [{run_name}] epoch {epoch}: embeddings collapsing: "
            f"{'; '.join(reasons)} (train.monitor.collapse_*; training continues)")

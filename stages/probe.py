"""probe@<run>: linear and kNN probes of the frozen encoder on the dataset's test split."""

from __future__ import annotations

from pipeline.evaluate.features import split_features
from pipeline.evaluate.probe import knn_probe, linear_probe
from pipeline.io import write_json
from pipeline.nets.backbones import load_encoder
from pipeline.params import Params
from stages._common import METRICS_DIR, encoder_path, run_stage, shard_dir


def probe_metrics(params: Params, name: str, train_split: str, test_split: str) -> dict:
    """Linear and kNN top-1 of run `name` trained on one split and tested on another."""
    cfg = params.evaluate
    encoder = load_encoder(encoder_path(name))
    data_dir = shard_dir(params, name)
    train_x, train_y = split_features(encoder, data_dir, train_split, cfg.batch_size)
    test_x, test_y = split_features(encoder, data_dir, test_split, cfg.batch_size)
    metrics = linear_probe(train_x, train_y, test_x, test_y, cfg.linear.weight_decay,
                           cfg.linear.max_iter)
    metrics["knn_top1"] = knn_probe(train_x, train_y, test_x, test_y, cfg.knn.k,
                                    cfg.knn.temperature)
    metrics.update(train_size=len(train_y), test_size=len(test_y),
                   num_classes=len(set(train_y.tolist())))
    return metrics


def main(params: Params, name: str) -> None:
    metrics = probe_metrics(params, name, "train", "test")
    write_json(METRICS_DIR / "probe" / f"{name}.json", metrics)
    print(f"probe {name}: linear {metrics['linear_top1']:.4f} knn {metrics['knn_top1']:.4f}")


if __name__ == "__main__":
    run_stage(main, item="runs")

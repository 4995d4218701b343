"""Where the stages write and read: the on-disk contract between DVC stages.

dvc.yaml declares these directories as outs and deps; every stage resolves paths here,
so one place decides the layout.
"""

from __future__ import annotations

from pathlib import Path

SHARDS_DIR = Path("data/shards")
PUBLISHED_DIR = Path("data/published")  # publish@<dataset>: where its shards went
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")
FEATURES_DIR = Path("features")
PRIOR_RECORD = "prior.json"  # models/<run>/seed_<s>/prior.json: the DSA prior file used


def seed_dir(seed: int) -> str:
    """The per-seed directory (or file stem) inside a run's outputs."""
    return f"seed_{seed}"


def shard_dir(dataset: str) -> Path:
    return SHARDS_DIR / dataset


def published_record_path(dataset: str) -> Path:
    return PUBLISHED_DIR / f"{dataset}.json"


def encoder_path(run_name: str, seed: int) -> Path:
    return MODELS_DIR / run_name / seed_dir(seed) / "encoder.pt"


def prior_record_path(run_name: str, seed: int) -> Path:
    return MODELS_DIR / run_name / seed_dir(seed) / PRIOR_RECORD


def features_path(run_name: str, seed: int, dataset: str, split: str) -> Path:
    """One split's cached frozen features of a run's seed (written by the features stage)."""
    return FEATURES_DIR / run_name / seed_dir(seed) / dataset / f"{split}.pt"


def metrics_path(stage: str, run_name: str) -> Path:
    """A run's metrics of one stage, every seed in one file."""
    return METRICS_DIR / stage / f"{run_name}.json"


def history_path(run_name: str, seed: int, plots_dir: Path = PLOTS_DIR) -> Path:
    """The per-epoch pretraining history of a run's seed."""
    return plots_dir / "pretrain" / run_name / f"{seed_dir(seed)}.tsv"

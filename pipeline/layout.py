"""Where the stages write and read: the on-disk contract between DVC stages.

dvc.yaml declares these directories as outs and deps; every stage resolves paths here,
writers and readers alike, so one place decides the layout. A stage writes a directory
out whole (`atomic_dir`), so each path inside one comes in two parts: the directory
(`*_dir`) and the file within it (`*_file`); `*_path` joins them for readers.
"""

from __future__ import annotations

from pathlib import Path

SHARDS_DIR = Path("data/shards")
PUBLISHED_DIR = Path("data/published")  # publish@<dataset>: where its shards went
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")  # headline numbers for DVC (committed), metrics_path
RESULTS_DIR = Path("results")  # every number a stage computed: the report's input
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


def models_dir(run_name: str) -> Path:
    """pretrain@<run>'s models: an encoder (and a prior record) per seed."""
    return MODELS_DIR / run_name


def encoder_file(seed: int) -> Path:
    return Path(seed_dir(seed)) / "encoder.pt"


def prior_record_file(seed: int) -> Path:
    return Path(seed_dir(seed)) / PRIOR_RECORD


def encoder_path(run_name: str, seed: int) -> Path:
    return models_dir(run_name) / encoder_file(seed)


def prior_record_path(run_name: str, seed: int) -> Path:
    return models_dir(run_name) / prior_record_file(seed)


def features_dir(run_name: str) -> Path:
    """features@<run>'s output: every split its evaluations read, per seed."""
    return FEATURES_DIR / run_name


def features_split_dir(seed: int, dataset: str, split: str) -> Path:
    """One split's feature shards and their manifest, within a run's features."""
    return Path(seed_dir(seed)) / dataset / split


def features_path(run_name: str, seed: int, dataset: str, split: str) -> Path:
    """One split's cached frozen features of a run's seed (a directory of feature shards
    written by the features stage; pipeline/evaluate/features.py reads it)."""
    return features_dir(run_name) / features_split_dir(seed, dataset, split)


def geometry_plots_dir(run_name: str) -> Path:
    """geometry@<run>'s figures (the first seed's 2-D map and similarity histograms)."""
    return PLOTS_DIR / "geometry" / run_name


def metrics_path(stage: str, run_name: str) -> Path:
    """A run's headline metrics of one stage for `dvc metrics`: per seed and the mean."""
    return METRICS_DIR / stage / f"{run_name}.json"


def results_path(stage: str, run_name: str) -> Path:
    """Everything a stage computed for a run, every seed in one file (the report reads it)."""
    return RESULTS_DIR / stage / f"{run_name}.json"


def summary_metrics_path() -> Path:
    """The report's headline metrics ({dataset: {run: {gap_closed: ...}}})."""
    return METRICS_DIR / "summary.json"


def history_dir(run_name: str, plots_dir: Path = PLOTS_DIR) -> Path:
    """pretrain@<run>'s per-epoch histories, one table per seed."""
    return plots_dir / "pretrain" / run_name


def history_file(seed: int) -> Path:
    return Path(f"{seed_dir(seed)}.tsv")


def history_path(run_name: str, seed: int, plots_dir: Path = PLOTS_DIR) -> Path:
    """The per-epoch pretraining history of a run's seed."""
    return history_dir(run_name, plots_dir) / history_file(seed)

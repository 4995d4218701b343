"""What every stage shares: argv, params validation and the one-line error contract."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.data.publish import check_published
from pipeline.errors import UserError
from pipeline.params import Params, ParamsError, load_params

EXIT_USER_ERROR = 2

SHARDS_DIR = Path("data/shards")
PUBLISHED_DIR = Path("data/published")  # publish@<dataset>: where its shards went
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")
FEATURES_DIR = Path("features")
PRIOR_RECORD = "prior.json"  # models/<run>/prior.json: the DSA prior file a run trained with


def dataset_shards(params: Params, dataset: str) -> str:
    """Where stages read a dataset's shards: data/shards/<dataset>, or the URL it was
    published to (`datasets.<dataset>.publish`) once its manifest there is the local one."""
    publish = params.datasets[dataset].publish
    if publish is None:
        return str(SHARDS_DIR / dataset)
    url = publish.read_url or publish.url
    key = "read_url" if publish.read_url else "url"
    check_published(SHARDS_DIR / dataset, url, f"params.yaml: datasets.{dataset}.publish.{key}")
    return url


def shard_dir(params: Params, run_name: str) -> str:
    """The shards of a run's dataset (a directory or a URL)."""
    return dataset_shards(params, params.runs[run_name].dataset)


def encoder_path(run_name: str) -> Path:
    return MODELS_DIR / run_name / "encoder.pt"


def features_path(run_name: str, dataset: str, split: str) -> Path:
    """Where the features stage caches one split's frozen features for a run."""
    return FEATURES_DIR / run_name / dataset / f"{split}.pt"


def run_stage(main: Callable[[Params, str | None], None], item: str | None = None) -> None:
    """Parse `[NAME] [--params PATH]`, validate params, run `main`; user errors exit 2.

    `item` is the params section that NAME must be a key of (`runs` or `datasets`).
    """
    parser = argparse.ArgumentParser()
    if item:
        parser.add_argument("name", help=f"a key of `{item}` in params.yaml")
    parser.add_argument("--params", default="params.yaml", help="params file")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        name = getattr(args, "name", None)
        if item and name not in getattr(params, item):
            raise ParamsError([(f"{item}.{name}", f"no such entry in {item}")], args.params)
        main(params, name)
    except ParamsError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)

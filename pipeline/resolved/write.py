"""The `params` stage's side: every stage's resolved params, from the validated params.yaml.

A run's evaluation of another dataset (a transfer target) depends on that dataset's
resolved params, which determine its shards (sharding is byte-reproducible).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from pipeline.params.data import DatasetConfig
from pipeline.params.evaluation import FinetuneConfig
from pipeline.params.schema import Params, RunParams
from pipeline.resolved.base import resolved_path
from pipeline.resolved.features import FeaturesParams
from pipeline.resolved.geometry import GeometryParams
from pipeline.resolved.pretrain import PretrainParams
from pipeline.resolved.probe import ProbeParams
from pipeline.resolved.publish import PublishParams
from pipeline.resolved.report import ReportParams, ReportRun
from pipeline.resolved.shard import ShardParams
from pipeline.resolved.transfer import Transfer, TransferParams


def transfer_targets(params: Params, run_name: str) -> list[Transfer]:
    """The run's transfer list with defaults filled in.

    Unset (`transfer:` absent) means the held-out classes of the run's own dataset when it
    has some, and nothing otherwise; `transfer: []` turns transfer off.
    """
    run = params.runs[run_name]
    if run.transfer is None:
        if not params.datasets[run.dataset].split.heldout_classes:
            return []
        return [Transfer(name=f"{run.dataset}_heldout", dataset=run.dataset,
                         train_split="transfer_train", test_split="transfer_test",
                         finetune=FinetuneConfig())]
    targets = []
    for target in run.transfer:
        dataset = target.dataset or run.dataset
        own = dataset == run.dataset
        train = target.train_split or ("transfer_train" if own else "train")
        test = target.test_split or ("transfer_test" if own else "test")
        default = (train, test) == (("transfer_train", "transfer_test") if own
                                    else ("train", "test"))
        name = (f"{dataset}_heldout" if own else dataset) if default else \
            f"{dataset}_{train}_{test}"
        targets.append(Transfer(name=name, dataset=dataset, train_split=train,
                                test_split=test, finetune=target.finetune))
    return targets


def feature_splits(run: RunParams, targets: list[Transfer]) -> list[tuple[str, str]]:
    """Every (dataset, split) whose features the run's evaluations read, in a fixed order."""
    splits = [(run.dataset, "train"), (run.dataset, "test")]
    for target in targets:
        for pair in ((target.dataset, target.train_split), (target.dataset, target.test_split)):
            if pair not in splits:
                splits.append(pair)
    return splits


def shard_params(dataset: DatasetConfig) -> DatasetConfig:
    """What determines a dataset's shards: not where they are published, which the stages
    reading them do not declare (they check the published manifest is the local one)."""
    return dataset.model_copy(update={"publish": None})


def method_label(run: RunParams) -> str:
    """`simclr`, or `simclr+dsa` for a run with a regulator."""
    if run.regulator is None:
        return run.method.name
    return f"{run.method.name}+{run.regulator.name}"


def run_files(params: Params, name: str) -> dict[Path, BaseModel]:
    """The resolved params of one run's stages."""
    run, evaluate, seeds = params.runs[name], params.evaluate, params.seeds
    targets = transfer_targets(params, name)
    splits = feature_splits(run, targets)
    probes = {"linear": evaluate.linear, "knn": evaluate.knn, "low_shot": evaluate.low_shot}
    return {
        resolved_path("pretrain", name): PretrainParams(run=params.pretraining(name),
                                                        seeds=seeds,
                                                        num_workers=params.ray.num_workers),
        resolved_path("features", name): FeaturesParams(
            dataset=run.dataset, seeds=seeds, batch_size=evaluate.batch_size, splits=splits,
            datasets={d: shard_params(params.datasets[d]) for d, _ in splits}),
        resolved_path("probe", name): ProbeParams(dataset=run.dataset, seeds=seeds, **probes),
        resolved_path("transfer", name): TransferParams(
            seeds=seeds, targets=targets, **probes,
            datasets={t.dataset: shard_params(params.datasets[t.dataset]) for t in targets},
            memory_budget_mb=evaluate.memory_budget_mb, shuffle_buffer=evaluate.shuffle_buffer),
        resolved_path("geometry", name): GeometryParams(
            dataset=run.dataset, seeds=seeds, views=run.views, batch_size=evaluate.batch_size,
            geometry=evaluate.geometry),
    }


def report_params(params: Params) -> ReportParams:
    """What the report reads: each run's identity, the seeds, the metric names' params."""
    return ReportParams(
        runs={name: ReportRun(dataset=run.dataset, method=method_label(run),
                              epochs=run.train.epochs) for name, run in params.runs.items()},
        seeds=params.seeds, knn=params.evaluate.knn, low_shot=params.evaluate.low_shot,
        report=params.report)


def stage_params(params: Params) -> dict[Path, BaseModel]:
    """Every stage's resolved params, keyed by the file it depends on."""
    out: dict[Path, BaseModel] = {}
    for name, dataset in params.datasets.items():
        out[resolved_path("shard", name)] = ShardParams(
            dataset=shard_params(dataset),
            upload_url=dataset.publish.url if dataset.publish else None)
        out[resolved_path("publish", name)] = PublishParams(
            url=dataset.publish.url if dataset.publish else None)
    for name in params.runs:
        out.update(run_files(params, name))
    out[resolved_path("report", "report")] = report_params(params)
    return out

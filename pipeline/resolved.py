"""The params each stage reads, resolved with their defaults, one JSON file per stage.

DVC compares params.yaml as written, so a key left to its default cannot be declared
(`Parameters '...' are missing`). Instead the `params` stage writes, for every stage of
every run, exactly the resolved params it reads to resolved/<stage>/<name>.json, and each
stage depends on its file: a minimal params.yaml works, and editing one run changes only
that run's files, so only that run reruns.

A run's evaluation of another dataset (a transfer target) depends on that dataset's
resolved params, which determine its shards (sharding is byte-reproducible).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.evaluate.transfer import transfer_targets
from pipeline.params import DatasetConfig, Params

RESOLVED_DIR = Path("resolved")


def resolved_path(stage: str, name: str) -> Path:
    """The file `stage@name` depends on (`report` has one file, named `report`)."""
    return RESOLVED_DIR / stage / f"{name}.json"


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json")


def _dataset(dataset: DatasetConfig) -> Any:
    """What determines a dataset's shards: not where they are published, which the stages
    reading them do not declare (they check the published manifest is the local one)."""
    return dataset.model_dump(mode="json", exclude={"publish"})


def stage_params(params: Params) -> dict[Path, dict[str, Any]]:
    """Every stage's resolved params, keyed by the file it depends on."""
    out: dict[Path, dict[str, Any]] = {}
    evaluate = params.evaluate
    probes = {"linear": _dump(evaluate.linear), "knn": _dump(evaluate.knn),
              "low_shot": _dump(evaluate.low_shot)}
    for name, dataset in params.datasets.items():
        out[resolved_path("shard", name)] = _dataset(dataset)
        out[resolved_path("publish", name)] = {
            "url": dataset.publish.url if dataset.publish else None}
    for name, run in params.runs.items():
        common = {"run": _dump(run), "seeds": params.seeds}
        others = sorted({t.dataset for t in transfer_targets(params, name)} - {run.dataset})
        targets = {d: _dataset(params.datasets[d]) for d in others}
        out[resolved_path("pretrain", name)] = {
            **common, "storage_path": params.ray.storage_path}
        out[resolved_path("features", name)] = {
            **common, "batch_size": evaluate.batch_size, "transfer_datasets": targets}
        out[resolved_path("probe", name)] = {
            "dataset": run.dataset, "seeds": params.seeds, **probes}
        out[resolved_path("transfer", name)] = {
            **common, **probes, "transfer_datasets": targets,
            "memory_budget_mb": evaluate.memory_budget_mb,
            "shuffle_buffer": evaluate.shuffle_buffer}
        out[resolved_path("geometry", name)] = {
            **common, "batch_size": evaluate.batch_size, "geometry": _dump(evaluate.geometry)}
    out[resolved_path("report", "report")] = {
        "runs": {name: _dump(run) for name, run in params.runs.items()},
        "seeds": params.seeds, "knn": _dump(evaluate.knn), "low_shot": _dump(evaluate.low_shot),
        "report": _dump(params.report)}
    return out

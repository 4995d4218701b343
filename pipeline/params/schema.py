"""The whole of params.yaml: the root model, the checks that span sections, and loading.

Only the `params` stage validates the whole file (a typo anywhere, including one made with
`dvc exp run -S`, stops the pipeline with the YAML path of the bad value before anything
runs); it then writes each stage's resolved params (pipeline/resolved/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from pipeline.params.base import (
    NAME_PATTERN,
    ParamsError,
    Strict,
    read_params_yaml,
    validation_errors,
)
from pipeline.params.data import DatasetConfig, STL10Source
from pipeline.params.evaluation import EvaluateConfig, TransferTarget
from pipeline.params.methods import SupervisedMethod
from pipeline.params.ray import RayConfig
from pipeline.params.report import ReportConfig
from pipeline.params.training import RunConfig


class RunParams(RunConfig):
    """One run: a dataset, a backbone, a method, its views and schedule, and its transfer
    targets.

    A run is trained once per seed of the top-level `seeds` list. `pretrain@<run>` reads
    all of it but `transfer`, which only the evaluation stages read.
    """

    # None: the dataset's held-out classes when it has some; [] turns transfer off
    transfer: list[TransferTarget] | None = None


class Params(Strict):
    datasets: dict[Annotated[str, Field(pattern=NAME_PATTERN)], DatasetConfig]
    runs: dict[Annotated[str, Field(pattern=NAME_PATTERN)], RunParams]
    # every run is trained once per seed; paired across runs by the report
    seeds: Annotated[list[int], Field(min_length=1)] = [0]
    ray: RayConfig = RayConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()

    def pretraining(self, run_name: str) -> RunConfig:
        """What `pretrain@<run>` computes with: the run without its transfer targets."""
        run = self.runs[run_name]
        return RunConfig.model_validate(run.model_dump(exclude={"transfer"}))


def _cross_reference_errors(params: Params) -> list[tuple[str, str]]:
    """Checks that span sections, reported at the key a user would edit."""
    errors = _report_errors(params)
    if len(set(params.seeds)) != len(params.seeds):
        errors.append(("seeds", f"seeds must be distinct, got {params.seeds}"))
    for run_name, run in params.runs.items():
        if run.dataset not in params.datasets:
            known = ", ".join(sorted(params.datasets)) or "none"
            errors.append((f"runs.{run_name}.dataset",
                           f"unknown dataset '{run.dataset}' (defined in datasets: {known})"))
            continue
        if run.regulator is not None and run.method.name in {"random", "supervised"}:
            errors.append((f"runs.{run_name}.regulator",
                           "a regulator needs an embedding method (simclr, byol, triplet, "
                           f"barlow_twins, vicreg, moco), not '{run.method.name}'"))
        for index, target in enumerate(run.transfer or []):
            if target.dataset is not None and target.dataset not in params.datasets:
                known = ", ".join(sorted(params.datasets)) or "none"
                errors.append((f"runs.{run_name}.transfer.{index}.dataset",
                               f"unknown dataset '{target.dataset}' (defined in datasets: "
                               f"{known})"))
        errors += _data_split_errors(run_name, run, params.datasets[run.dataset])
    return errors


def _report_errors(params: Params) -> list[tuple[str, str]]:
    """The report's references and comparisons name runs; a verdict needs 2 seeds."""
    cfg, errors = params.report, []
    known = ", ".join(params.runs) or "none"
    for key in ("control", "supervised"):
        names = getattr(cfg, key)
        for index, name in enumerate(names):
            if name not in params.runs:
                errors.append((f"report.{key}.{index}", f"unknown run '{name}' (runs: {known})"))
        datasets = [params.runs[n].dataset for n in names if n in params.runs]
        for dataset in sorted({d for d in datasets if datasets.count(d) > 1}):
            errors.append((f"report.{key}", f"one run per dataset, got several for '{dataset}'"))
    for index, pair in enumerate(cfg.comparisons):
        key = f"report.comparisons.{index}"
        missing = [name for name in pair if name not in params.runs]
        if missing:
            errors.append((key, f"unknown run '{missing[0]}' (runs: {known})"))
        elif pair[0] == pair[1]:
            errors.append((key, f"compares run '{pair[0]}' with itself"))
        elif (params.runs[pair[0]].dataset != params.runs[pair[1]].dataset
              and all(params.runs[name].dataset in params.datasets for name in pair)):
            # (an unknown dataset is reported once, at the run's own key)
            errors.append((key, f"runs '{pair[0]}' and '{pair[1]}' use different datasets; "
                                "seeds pair only runs of one dataset"))
    if cfg.comparisons and len(params.seeds) < 2:
        errors.append(("report.comparisons", f"a verdict needs at least 2 seeds, "
                                             f"seeds has {len(params.seeds)}"))
    return errors


def _data_split_errors(run_name: str, run: RunParams, dataset: DatasetConfig
                      ) -> list[tuple[str, str]]:
    """Pretraining reads `train`, and STL-10's `unlabeled` only where it exists and no
    labels are needed."""
    has_unlabeled = isinstance(dataset.source, STL10Source) and dataset.source.unlabeled
    errors = []
    for split in run.data.splits:
        key = f"runs.{run_name}.data.splits"
        if split not in ("train", "unlabeled"):
            errors.append((key, f"unknown split '{split}' (pretraining reads train, unlabeled)"))
        elif split == "unlabeled" and not has_unlabeled:
            errors.append((key, f"dataset '{run.dataset}' has no unlabeled split "
                                "(stl10 with unlabeled: true has one)"))
        elif split == "unlabeled" and isinstance(run.method, SupervisedMethod):
            errors.append((key, "the supervised method needs labels; drop 'unlabeled'"))
    return errors



def validate_params(data: Any, source: str = "params.yaml") -> Params:
    """Validate already-parsed params; raise ParamsError listing every problem."""
    if not isinstance(data, dict):
        raise ParamsError([("", "must be a mapping of sections (datasets, runs, ...)")], source)
    runs = data.get("runs")
    seeded = [name for name, run in runs.items() if isinstance(run, dict) and "seed" in run] \
        if isinstance(runs, dict) else []
    if seeded:
        raise ParamsError([(f"runs.{name}.seed", "seeds are set once for all runs, in the "
                                                  "top-level `seeds:` list") for name in seeded],
                          source)
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(validation_errors(exc, data), source) from None
    errors = _cross_reference_errors(params)
    if errors:
        raise ParamsError(errors, source)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError with YAML paths on any problem."""
    return validate_params(read_params_yaml(path), str(path))

"""Which split pairs a run is transferred to: the `transfer:` list of a run, resolved."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.params import FinetuneConfig, Params


@dataclass(frozen=True)
class Transfer:
    """A resolved transfer target: the probe trains on `train_split` of `dataset` and
    tests on its `test_split`; `name` keys its metrics. `finetune.epochs > 0` adds
    fine-tuning of the whole encoder on the same split pair."""

    name: str
    dataset: str
    train_split: str
    test_split: str
    finetune: FinetuneConfig


def transfer_targets(params: Params, run_name: str) -> list[Transfer]:
    """The run's transfer list with defaults filled in.

    Unset (`transfer:` absent) means the held-out classes of the run's own dataset when it
    has some, and nothing otherwise; `transfer: []` turns transfer off.
    """
    run = params.runs[run_name]
    if run.transfer is None:
        if not params.datasets[run.dataset].split.heldout_classes:
            return []
        return [Transfer(f"{run.dataset}_heldout", run.dataset, "transfer_train",
                         "transfer_test", FinetuneConfig())]
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
        targets.append(Transfer(name, dataset, train, test, target.finetune))
    return targets


def feature_splits(params: Params, run_name: str) -> list[tuple[str, str]]:
    """Every (dataset, split) whose features the run's evaluations read, in a fixed order."""
    run = params.runs[run_name]
    splits = [(run.dataset, "train"), (run.dataset, "test")]
    for target in transfer_targets(params, run_name):
        for pair in ((target.dataset, target.train_split), (target.dataset, target.test_split)):
            if pair not in splits:
                splits.append(pair)
    return splits

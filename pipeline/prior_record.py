"""The record of a DSA prior file a run trained with (models/<run>/seed_<s>/prior.json):
the pretrain stage writes it, the report reads it back to name runs whose prior changed.

DVC cannot declare that file as a dependency of only some `pretrain@` stages, so a
retrained prior does not make the runs built on it stale in `dvc status`; the report,
which reruns after any retraining, says so instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import UserError
from pipeline.io import sha256_file, write_json


def write_prior_record(path: Path, prior: Path) -> None:
    """Record the prior file `prior` (its path and sha256) at `path`."""
    write_json(path, {"path": str(prior), "sha256": sha256_file(prior)})


def stale_priors(records: dict[str, Path]) -> list[str]:
    """One line per run whose prior file (a `checkpoint` encoder of another run, or
    torchvision weights) is gone or differs from the one it was trained with; `records`
    maps runs to the record their pretrain stage wrote (absent: no file prior).
    """
    stale = []
    for name, record_path in records.items():
        if not record_path.is_file():
            continue
        try:
            record = json.loads(record_path.read_text())
            path = Path(record["path"])
            expected = record["sha256"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{record_path}: not a prior record "
                            f"({exc.__class__.__name__})") from None
        if not path.is_file() or sha256_file(path) != expected:
            change = "is gone" if not path.is_file() else "has changed since"
            stale.append(f"runs.{name}: its DSA prior {path} {change} it was trained; "
                         f"rerun `dvc repro -f pretrain@{name}`")
    return stale

"""Where a stage's resolved params are and how it reads them back."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from pipeline.errors import UserError, one_line
from pipeline.io import read_json

RESOLVED_DIR = Path("resolved")
Resolved = TypeVar("Resolved", bound=BaseModel)


def resolved_path(stage: str, name: str) -> Path:
    """The file `stage@name` depends on (`report` has one file, named `report`)."""
    return RESOLVED_DIR / stage / f"{name}.json"


def load_resolved(model: type[Resolved], stage: str, name: str) -> Resolved:
    """`stage@name`'s resolved params; a missing or out-of-date file is named, with the
    command that writes it."""
    path = resolved_path(stage, name)
    rerun = "run the params stage first (`dvc repro params` or `python -m stages.params`)"
    data = read_json(path, "not found", rerun)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise UserError(one_line(f"{path}: {where}: {error['msg'].lower()}; {rerun}")) from None

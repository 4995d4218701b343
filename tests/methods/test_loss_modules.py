"""Every loss is a small nn.Module with plain arguments that imports only torch and
pipeline.distributed (lightly's style): readable and reusable without the pipeline."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import pytest
from torch import nn

import pipeline.losses as losses

LOSSES_DIR = Path(losses.__file__).parent
ALLOWED = ("torch", "pipeline.distributed", "pipeline.losses")


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(LOSSES_DIR.glob("*.py")), ids=lambda p: p.name)
def test_losses_import_only_torch_and_pipeline_distributed(path):
    for name in imported(path):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        assert name.startswith(ALLOWED), f"{path.name} imports {name}"


@pytest.mark.parametrize("name", losses.__all__)
def test_each_loss_is_a_module_with_plain_arguments(name):
    cls = getattr(losses, name)
    assert issubclass(cls, nn.Module)
    if cls.__init__ is nn.Module.__init__:
        return  # no arguments of its own
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        assert parameter.annotation in ("int", "float", "bool", "str", "int | None"), (
            f"{name}({parameter.name}: {parameter.annotation})")

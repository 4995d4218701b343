"""dvc.yaml's code deps are a contract: every module a stage imports, transitively inside
pipeline/ and stages/, is declared (a file or a directory above it), and every declared
code path exists. An undeclared import would leave stale outputs that `dvc repro` calls
up to date; a path that moved would make DVC fail on a missing dependency."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")
# the packages' own __init__ files: a docstring, no code (checked below), not declared
TOP_LEVEL = {ROOT / package / "__init__.py" for package in PACKAGES}


def module_file(module: str) -> Path | None:
    """The file of a module of this project (None for third-party modules)."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in the file names, at any depth
    (imports inside functions count: they run when the stage does)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def transitive_files(module: str) -> set[Path]:
    """The project files a module imports, directly or not, itself included; importing
    `a.b.c` also runs the `__init__.py` of `a` and `a.b`."""
    seen: set[Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                pending.extend(imported_modules(path))
    return seen


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_body(definition: dict) -> dict:
    return definition.get("do", definition)


def code_deps(body: dict) -> list[str]:
    return [d for d in body.get("deps", []) if d.split("/")[0] in PACKAGES]


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name", list(stages()))
def test_every_imported_module_is_a_declared_dep(name: str):
    body = stage_body(stages()[name])
    module = re.search(r"python -m (\S+)", body["cmd"]).group(1)
    deps = code_deps(body)
    missing = sorted(p.relative_to(ROOT).as_posix() for p in transitive_files(module)
                     if p not in TOP_LEVEL and not covered(p, deps))
    assert not missing, f"dvc.yaml stage {name} imports undeclared {missing}"


@pytest.mark.parametrize("name", list(stages()))
def test_every_declared_code_dep_exists(name: str):
    gone = [dep for dep in code_deps(stage_body(stages()[name])) if not (ROOT / dep).exists()]
    assert not gone, f"dvc.yaml stage {name} declares missing {gone}"


def test_top_level_package_files_hold_no_code():
    for path in TOP_LEVEL:
        assert all(isinstance(node, ast.Expr) for node in ast.parse(path.read_text()).body)


def test_the_checker_sees_imports_inside_functions(tmp_path: Path):
    path = tmp_path / "module.py"
    path.write_text("import os\n\ndef f():\n    from pipeline.io import write_json\n")
    assert {"os", "pipeline.io", "pipeline.io.write_json"} <= imported_modules(path)
    files = {p.relative_to(ROOT).as_posix() for p in transitive_files("stages.report")}
    assert {"stages/report.py", "pipeline/report.py", "pipeline/stats.py"} <= files


@pytest.mark.parametrize(("package", "forbidden"), [
    ("pipeline/methods", "pipeline.train"), ("pipeline/evaluate", "pipeline.train"),
    ("pipeline/data", "pipeline.train"), ("pipeline/nets", "pipeline.methods"),
])
def test_package_boundaries_point_one_way(package: str, forbidden: str):
    wrong = {path.relative_to(ROOT).as_posix(): sorted(m for m in imported_modules(path)
                                                       if m.startswith(forbidden))
             for path in (ROOT / package).rglob("*.py")}
    assert not {k: v for k, v in wrong.items() if v}


def test_stages_do_not_import_stages():
    for path in (ROOT / "stages").glob("*.py"):
        others = {m for m in imported_modules(path)
                  if m.startswith("stages") and not m.startswith("stages._common")}
        assert not others, f"{path.name} imports {sorted(others)}"

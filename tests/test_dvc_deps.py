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
def test_every_declared_code_dep_is_imported(name: str):
    """Over-declaring is not safe either: an edit to a module the stage never runs would
    rerun it (and, for pretrain@, retrain every encoder)."""
    body = stage_body(stages()[name])
    module = re.search(r"python -m (\S+)", body["cmd"]).group(1)
    imported = transitive_files(module)
    unused = [dep for dep in code_deps(body) if not any(covered(path, [dep])
                                                        for path in imported)]
    assert not unused, f"dvc.yaml stage {name} declares {unused}, which it does not import"


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
    # the flow is data -> pretraining -> evaluation -> report; nothing imports downstream
    ("pipeline/train", "pipeline.evaluate"), ("pipeline/methods", "pipeline.evaluate"),
    ("pipeline/data", "pipeline.evaluate"), ("pipeline/nets", "pipeline.evaluate"),
    ("pipeline/resolved", "pipeline.evaluate"), ("pipeline/train", "pipeline.report"),
    ("pipeline/report.py", "pipeline.methods"), ("stages/report.py", "pipeline.methods"),
    ("pipeline/metrics", "pipeline.evaluate"), ("pipeline/params", "pipeline.data"),
    ("pipeline/params", "pipeline.resolved"), ("pipeline/params", "pipeline.metrics"),
    # only the params stage reads the whole schema; the others read resolved/ files
    ("stages/shard.py", "pipeline.params.schema"), ("stages/pretrain.py", "pipeline.params.schema"),
    ("pipeline/train", "pipeline.params.schema"), ("pipeline/evaluate", "pipeline.params.schema"),
    ("pipeline/report.py", "pipeline.params.schema"), ("pipeline/data", "pipeline.params.schema"),
])
def test_package_boundaries_point_one_way(package: str, forbidden: str):
    files = [ROOT / package] if package.endswith(".py") else (ROOT / package).rglob("*.py")
    wrong = {path.relative_to(ROOT).as_posix(): sorted(m for m in imported_modules(path)
                                                       if m.startswith(forbidden))
             for path in files}
    assert not {k: v for k, v in wrong.items() if v}


@pytest.mark.parametrize(("stage", "module", "forbidden"), [
    ("pretrain", "stages.pretrain", ("pipeline/evaluate/", "pipeline/params/evaluation.py",
                                     "pipeline/params/report.py", "pipeline/params/schema.py",
                                     "pipeline/report.py", "pipeline/metrics/probe.py",
                                     "pipeline/metrics/geometry.py",
                                     "pipeline/metrics/transfer.py", "pipeline/resolved/write.py")),
    # features runs on Ray (it reads `ray:`, pipeline/params/ray.py), never with training code
    ("features", "stages.features", ("pipeline/params/evaluation.py", "pipeline/train/",
                                     "pipeline/methods/")),
    ("report", "stages.report", ("pipeline/methods/", "pipeline/nets/", "pipeline/train/",
                                 "pipeline/params/methods.py", "pipeline/params/training.py")),
])
def test_a_stage_does_not_compute_with_downstream_code(stage: str, module: str,
                                                       forbidden: tuple[str, ...]):
    """What an edit must never rerun: no evaluation or report module reaches pretraining."""
    reached = sorted(p.relative_to(ROOT).as_posix() for p in transitive_files(module))
    assert not [path for path in reached if path.startswith(forbidden)], stage


def test_no_module_imports_another_modules_private_names():
    wrong = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.ImportFrom) and node.module
                        and node.module.split(".")[0] in PACKAGES):
                    wrong += [f"{path.relative_to(ROOT)}: {node.module}.{alias.name}"
                              for alias in node.names if alias.name.startswith("_")]
    assert not wrong


def test_stages_do_not_import_stages():
    for path in (ROOT / "stages").glob("*.py"):
        others = {m for m in imported_modules(path)
                  if m.startswith("stages") and not m.startswith("stages._common")}
        assert not others, f"{path.name} imports {sorted(others)}"

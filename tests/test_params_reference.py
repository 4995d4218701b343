"""The generated parameter reference (docs/params.md) is current and covers the schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, Field

from pipeline.params_reference import COMMAND, documented_paths, main, render, sections

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "params.md"


def test_docs_params_md_is_current():
    current = REFERENCE.read_text() if REFERENCE.is_file() else ""
    assert current == render(), (
        f"docs/params.md does not match pipeline/params/: run `{COMMAND}` and commit it")


def _leaf_paths(node: object, prefix: str = "") -> list[str]:
    """Concrete YAML paths of every scalar or list value (`runs.simclr.train.epochs`)."""
    if isinstance(node, dict):
        return [path for key, value in node.items() if key != "<<"
                for path in _leaf_paths(value, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(node, list) and any(isinstance(item, dict) for item in node):
        return [path for index, item in enumerate(node)
                for path in _leaf_paths(item, f"{prefix}.{index}")]
    return [prefix]


def test_every_key_of_the_repository_params_is_documented():
    patterns = [re.compile(re.sub(r"<[^<>]+>", "[^.]+", re.escape(path)) + "$")
                for path in documented_paths()]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    missing = [path for path in _leaf_paths(params)
               if not any(pattern.match(path) for pattern in patterns)]
    assert missing == []


# A small schema with every construct the walker handles.


class Leaf(BaseModel):
    """A leaf section."""

    size: Annotated[int, Field(gt=0)] = 3  # how big
    # what it is called,
    # over two lines
    label: Literal["a", "b"] = "a"
    ratio: Annotated[float, Field(ge=0, lt=1)] = 0.5
    """The ratio, documented by a docstring."""


class Red(BaseModel):
    """The red variant."""

    name: Literal["red"]
    leaf: Leaf = Leaf()


class Blue(BaseModel):
    name: Literal["blue", "navy"]
    depth: int | None = Field(default=None, description="How deep.")


class Root(BaseModel):
    things: dict[str, Red]
    colour: Annotated[Red | Blue, Field(discriminator="name")]
    items: list[Leaf] = []
    custom: Leaf = Leaf(size=7)


def _section(path: str, variant: str | None = None):
    return next(s for s in sections(Root) if s.path == path and s.variant == variant)


def test_walker_reaches_mappings_lists_and_every_variant():
    assert documented_paths(Root) >= {
        "things.<thing>.name", "things.<thing>.leaf.size", "colour.depth", "colour.leaf.ratio",
        "items.<i>.label", "custom.size"}
    assert _section("colour", "name: blue | navy").keys[1].doc == "How deep."
    colour = _section("").keys[1]
    assert colour.type.startswith("one of these by `name`: [`red`](#")
    assert "[`blue`/`navy`](#colour-name-blue-navy)" in colour.type


def test_key_text_comes_from_comments_and_docstrings():
    keys = {key.name: key for key in _section("things.<thing>.leaf").keys}
    assert keys["size"].doc == "how big"
    assert keys["label"].doc == "what it is called, over two lines"
    assert keys["ratio"].doc == "The ratio, documented by a docstring."
    assert (keys["size"].type, keys["ratio"].type) == ("integer > 0", "number in [0, 1)")
    assert keys["label"].type == "one of `a` or `b`"


def test_defaults_are_the_schema_defaults_including_overridden_nested_ones():
    root = {key.name: key.default for key in _section("").keys}
    assert root == {"things": "required", "colour": "required", "items": "`[]`",
                    "custom": "see below"}
    shared = {key.name: key.default for key in _section("things.<thing>.leaf").keys}
    custom = {key.name: key.default for key in _section("custom").keys}
    assert shared["size"] == "`3`" and custom["size"] == "`7`"
    assert _section("colour", "name: red").keys[1].type == \
        "mapping, see [`things.<thing>.leaf`](#things-thing-leaf)"  # met before: linked


def test_check_reports_a_stale_file_and_writing_makes_it_current(tmp_path: Path, capsys):
    out = tmp_path / "params.md"
    out.write_text("stale\n")
    assert main(["--check", "--out", str(out)]) == 1
    assert COMMAND in capsys.readouterr().err
    assert out.read_text() == "stale\n"
    assert main(["--out", str(out)]) == 0
    assert main(["--check", "--out", str(out)]) == 0

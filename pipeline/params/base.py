"""What every section of the schema shares: the strict base model, the number types, the
error that names YAML keys, and reading params YAML the way DVC does.

A problem is reported at the key a user would edit: `validate_section` maps pydantic's
error locations onto the YAML the user wrote (under a key prefix when only one section of
the file is validated, such as `ray`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pipeline.errors import UserError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class ParamsError(UserError):
    """Invalid params: `errors` holds `(yaml_path, message)` pairs, one per problem.

    Library code that finds a bad value names its key here (the stage knows which file
    the params came from and prints `<file>: <key>: <message>`).
    """

    def __init__(self, errors: list[tuple[str, str]], source: str = "params.yaml"):
        self.errors = errors
        self.source = source
        super().__init__("\n".join(self.lines()))

    def __reduce__(self):  # rebuilt from its fields, not from the joined message
        return (self.__class__, (self.errors, self.source))

    def lines(self) -> list[str]:
        return [f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}"
                for path, message in self.errors]


class Strict(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)



class _YamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (`1e-3` is a number, as DVC reads it) and no
    aliases (duplicate keys are found on the composed tree, by `_duplicate_keys`).

    Aliases (`*train`, `<<: *run`) are refused: `dvc exp run -S` rewrites params.yaml
    with them expanded or dropped, and an edit through one would be silently lost.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasUsed(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class _AliasUsed(Exception):
    def __init__(self, line: int):
        self.line = line


def _duplicate_keys(node: yaml.Node, path: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(full YAML path, message) of every key repeated within one mapping.

    Checked on the composed node tree before anything is constructed: PyYAML would keep
    the last value silently, and a constructor sees a key but not the path to it.
    """
    found: list[tuple[str, str]] = []
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, (*path, str(index)))
    elif isinstance(node, yaml.MappingNode):
        seen: set[tuple[str, str]] = set()
        for key_node, value_node in node.value:
            key_path = (*path, str(key_node.value))
            if (key_node.tag, key_node.value) in seen:
                found.append((".".join(key_path),
                              f"duplicate key (line {key_node.start_mark.line + 1})"))
            seen.add((key_node.tag, key_node.value))
            found += _duplicate_keys(value_node, key_path)
    return found


def _load_yaml(text: str, source: str) -> Any:
    """Parse params YAML; every duplicate key is an error named by its full path."""
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = _duplicate_keys(node)
        if duplicates:
            raise ParamsError(duplicates, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_path(loc: tuple[Any, ...], data: Any) -> str:
    """Map a pydantic error location onto the YAML keys the user wrote.

    Discriminated unions and validators insert labels (e.g. the tag `simclr`) into the
    location; walking the input data tells real keys from such labels.
    """
    parts: list[str] = []
    node = data
    for position, item in enumerate(loc):
        is_key = isinstance(node, dict) and item in node
        is_index = isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node)
        if is_key or is_index:
            node = node[item]
        elif isinstance(node, dict) and (item == node.get("name")
                                         or any(later in node for later in loc[position + 1:])):
            continue  # a label pydantic inserted (e.g. the union tag), not a key of the YAML
        elif isinstance(node, dict):
            node = None  # a missing or unknown key: name it, then stop walking
        else:
            continue
        parts.append(str(item))
    return ".".join(parts)


def _error_path(error: dict[str, Any], data: Any) -> str:
    """The YAML key an error is about: for an unknown union tag, the tag's own key."""
    path = _yaml_path(error["loc"], data)
    if error["type"] == "union_tag_invalid":
        tag_key = _tag_key(error.get("ctx", {}))
        path = f"{path}.{tag_key}" if path else tag_key
    return path


def _tag_key(ctx: dict[str, Any]) -> str:
    """The key a discriminated union is told apart by (pydantic quotes it: `'name'`)."""
    return str(ctx.get("discriminator", "name")).strip("'")


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _message(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    bounds = {"greater_than": ">", "greater_than_equal": ">=",
              "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        return f"must be {bounds[kind]} {_number(next(iter(ctx.values())))}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "union_tag_invalid":
        return f"unknown name '{ctx.get('tag')}', expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"needs a '{_tag_key(ctx)}' key"
    if kind in {"float_parsing", "float_type"}:
        return f"must be a number, got {error.get('input')!r}"
    if kind in {"int_parsing", "int_type", "int_from_float"}:
        return f"must be an integer, got {error.get('input')!r}"
    if kind in {"bool_parsing", "bool_type"}:
        return f"must be true or false, got {error.get('input')!r}"
    if kind == "string_pattern_mismatch":
        return "names may only use letters, digits, '_', '.' and '-'"
    message = error["msg"].removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def validation_errors(exc: ValidationError, data: Any, prefix: str = ""
                      ) -> list[tuple[str, str]]:
    """(YAML key, message) of every error pydantic found in `data`, which sits at `prefix`
    (a dotted key; empty for the whole file)."""
    errors = []
    for error in exc.errors():
        path = _error_path(error, data)
        errors.append((".".join(part for part in (prefix, path) if part), _message(error)))
    return errors


def validate_section(schema: Any, data: Any, prefix: str, source: str = "params.yaml") -> Any:
    """`data` validated as `schema` (a model or a type), the section of params YAML at
    `prefix`; a ParamsError names each bad key in full."""
    try:
        return TypeAdapter(schema).validate_python(data)
    except ValidationError as exc:
        raise ParamsError(validation_errors(exc, data, prefix), source) from None


def read_params_yaml(path: str | Path) -> Any:
    """The parsed params file: YAML 1.2 floats, no aliases, no duplicate keys; every
    problem is a ParamsError naming the file (and the key, for a duplicate)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError([("", "file not found")], source) from None
    try:
        return _load_yaml(text, source)
    except _AliasUsed as exc:
        raise ParamsError([("", f"line {exc.line}: YAML aliases (*name, <<: *name) are not "
                                "supported; write the values out (seeds: lists the seeds "
                                "once)")], source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParamsError([("", f"invalid YAML{where}: {problem}")], source) from None


def section(data: Any, *keys: str) -> Any:
    """The value at `keys` in parsed params YAML (None where any of them is missing)."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data

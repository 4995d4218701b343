"""The parameter reference, docs/params.md, generated from the pydantic schema.

`python -m pipeline.params_reference` rewrites the file; `--check` only says whether it is
current. The schema (pipeline/params/) stays the one place where a key's type, default and
meaning are written: this module walks every model reachable from `Params` (discriminated
unions once per `name`, mappings and lists of models included) and reads each key's text
from its `Field(description=...)`, the docstring under it, or the comments above and beside
it. tests/test_params_reference.py fails when the committed file is stale.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline.params.schema import Params

DEFAULT_OUT = Path("docs/params.md")
COMMAND = "python -m pipeline.params_reference"
INTRO = f"""\
# Parameter reference

<!-- Generated from pipeline/params/ by `{COMMAND}`. Do not edit by hand:
     change the schema's docstrings and comments, then rerun the command. -->

Every key that `params.yaml` accepts, with its type, its default and what it does, as the
schema in `pipeline/params/` defines them. The `params` stage, which every other stage
follows, validates the whole file before anything runs: an unknown key, a value out of
range or a missing required key stops it with one line per problem, naming the YAML path,
and exit code 2. A key left out takes the default listed here.

In the paths, `<dataset>` and `<run>` stand for names you choose (letters, digits, `_`,
`.` and `-`), and `<i>` for a list position (0, 1, ...). A section marked with a `name`
applies when that mapping's `name` key has that value: `name` chooses among the variants
of a source, a backbone, a method or a regulator.

This page says what each key does; the topic pages say how the parts fit together:
[methods](methods.md) (the losses and what their keys mean), [data](data.md),
[training](training.md) and [evaluation](evaluation.md).
"""


@dataclass(frozen=True)
class Key:
    """One row of a section's table."""

    name: str
    type: str
    default: str
    doc: str


@dataclass
class Section:
    """One mapping of params.yaml: where it sits, which variant, its keys."""

    path: str
    variant: str | None
    anchor: str
    doc: str
    keys: list[Key] = field(default_factory=list)
    also: list[str] = field(default_factory=list)  # other paths with the same keys


# ------------------------------------------------------------------------ source text


def _class_doc(model: type[BaseModel]) -> str:
    """The model's own docstring (not an inherited one), paragraphs kept."""
    doc = model.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if doc else ""


def _comments_by_line(source: str) -> dict[int, str]:
    """Line number (1-based) -> the text of the comment on that line."""
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    return comments


def _field_texts(model: type[BaseModel]) -> dict[str, list[str]]:
    """Field name -> the docstring under it, the comment lines right above it and the
    comments beside it, read from the class's source (none where there is none)."""
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    comments = _comments_by_line(source)
    body = ast.parse(source).body[0].body
    texts = {}
    for index, statement in enumerate(body):
        if not (isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)):
            continue
        above, line = [], statement.lineno - 1
        while line >= 1 and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        beside = [comments[n] for n in range(statement.lineno, statement.end_lineno + 1)
                  if n in comments and not lines[n - 1].lstrip().startswith("#")]
        following = body[index + 1] if index + 1 < len(body) else None
        docstring = (following.value.value if isinstance(following, ast.Expr)
                     and isinstance(following.value, ast.Constant)
                     and isinstance(following.value.value, str) else "")
        texts[statement.target.id] = [inspect.cleandoc(docstring), *above, *beside]
    return texts


def _key_texts(model: type[BaseModel]) -> dict[str, list[str]]:
    """Field texts of the model and the models it inherits fields from (own first)."""
    texts: dict[str, list[str]] = {}
    for klass in reversed(model.__mro__):
        if isinstance(klass, type) and issubclass(klass, BaseModel) and klass is not BaseModel:
            texts.update(_field_texts(klass))
    return texts


# ------------------------------------------------------------------------------ types


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """A type without its Annotated layers, and their metadata (flattened)."""
    metadata: list[Any] = []
    while get_origin(tp) is Annotated:
        tp, *extra = get_args(tp)
        metadata += extra
    return tp, metadata


def _constraints(metadata: list[Any]) -> list[Any]:
    """annotated_types constraints, including those inside nested `Field(...)`s."""
    found = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            found += _constraints(item.metadata)
        else:
            found.append(item)
    return found


def _discriminator(metadata: list[Any]) -> str | None:
    for item in metadata:
        if isinstance(item, FieldInfo) and isinstance(item.discriminator, str):
            return item.discriminator
    return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _number(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _bounded(base: str, constraints: list[Any]) -> str:
    """`number in [0, 1]`, `integer > 0`, ... from Gt/Ge/Lt/Le."""
    low = next((("[", c.ge) for c in constraints if isinstance(c, Ge)), None) or \
        next((("(", c.gt) for c in constraints if isinstance(c, Gt)), None)
    high = next(((c.le, "]") for c in constraints if isinstance(c, Le)), None) or \
        next(((c.lt, ")") for c in constraints if isinstance(c, Lt)), None)
    if low and high:
        return f"{base} in {low[0]}{_number(low[1])}, {_number(high[0])}{high[1]}"
    if low:
        return f"{base} {'>=' if low[0] == '[' else '>'} {_number(low[1])}"
    if high:
        return f"{base} {'<=' if high[1] == ']' else '<'} {_number(high[0])}"
    return base


def _scalar(value: Any) -> str:
    """A value as YAML would write it, in flow style."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value if value and re.fullmatch(r"[A-Za-z0-9_./~+-]+", value) else repr(value)
    if isinstance(value, set | frozenset):
        value = sorted(value, key=str)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in value.items()) + "}"
    return str(value)


def _placeholder(field_name: str) -> str:
    """`datasets` -> `<dataset>`, `runs` -> `<run>`, `studies` -> `<study>`."""
    if field_name.endswith("ies"):
        return f"<{field_name[:-3]}y>"
    if field_name.endswith("s") and len(field_name) > 1:
        return f"<{field_name[:-1]}>"
    return "<name>"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "top-level"


# ----------------------------------------------------------------------------- walking


class _Walker:
    """Collects one Section per (path, variant), depth first, in schema order; a model
    class met again with the same defaults links to its first section."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.seen: dict[tuple[type[BaseModel], str | None, str], Section] = {}

    def model(self, model: type[BaseModel], path: str, variant: str | None,
              defaults: BaseModel | None) -> Section:
        """The model's section, walked now, or the earlier one with the same defaults."""
        identity = (model, variant, defaults.model_dump_json() if defaults is not None else "")
        if identity in self.seen:
            known = self.seen[identity]
            if path != known.path and path not in known.also:
                known.also.append(path)
            return known
        anchor = _slug(f"{path} {variant or ''}")
        taken = {section.anchor for section in self.sections}
        anchor = next(f"{anchor}{suffix}" for suffix in ("", *(f"-{n}" for n in range(2, 99)))
                      if f"{anchor}{suffix}" not in taken)
        section = Section(path, variant, anchor, _class_doc(model))
        self.seen[identity] = section
        self.sections.append(section)
        texts = _key_texts(model)
        for name, info in model.model_fields.items():
            if (info.json_schema_extra or {}).get("internal"):
                continue  # set by the pipeline, not written in params.yaml
            default = getattr(defaults, name) if defaults is not None else info.default
            key_path = f"{path}.{name}" if path else name
            kind = self.type_text(info.annotation, info.metadata, key_path, default,
                                  info.discriminator if isinstance(info.discriminator, str)
                                  else None)
            parts = [" ".join(part.split()) for part in (info.description or "",
                                                          *texts.get(name, []))]
            doc = " ".join(dict.fromkeys(part for part in parts if part))  # once each
            section.keys.append(Key(name, kind, self.default_text(info, default), doc))
        return section

    def default_text(self, info: FieldInfo, default: Any) -> str:
        if default is PydanticUndefined and info.default_factory is None:
            return "required"
        if default is PydanticUndefined:
            default = info.default_factory()
        if isinstance(default, BaseModel):
            return "`{}`" if default == type(default).model_construct() else "see below"
        return f"`{_scalar(default)}`"

    def link(self, model: type[BaseModel], path: str, variant: str | None,
             default: Any, label: str | None = None) -> str:
        """A Markdown link to the model's section (walking it first if it is new)."""
        defaults = default if isinstance(default, model) else None
        section = self.model(model, path, variant, defaults)
        return f"[`{label or section.path}`](#{section.anchor})"

    def type_text(self, tp: Any, metadata: list[Any], path: str, default: Any = None,
                  discriminator: str | None = None) -> str:
        """Markdown for a type; models met on the way get their sections (and links)."""
        tp, more = _unwrap(tp)
        metadata = [*metadata, *more]
        discriminator = discriminator or _discriminator(metadata)
        constraints = _constraints(metadata)
        origin, args = get_origin(tp), get_args(tp)
        if _is_model(tp):
            variant = self.variant(tp, discriminator)
            return f"mapping, see {self.link(tp, path, variant, default)}"
        if _is_union(tp):
            return self.union_text(args, path, default, discriminator)
        if origin is Literal:
            values = [f"`{_scalar(v)}`" for v in args]
            return values[0] if len(values) == 1 else \
                f"one of {', '.join(values[:-1])} or {values[-1]}"
        if origin is list:
            size = "non-empty list" if any(isinstance(c, MinLen) and c.min_length > 0
                                           for c in constraints) else "list"
            return f"{size} of {self.items_text(args[0], f'{path}.<i>')}"
        if origin in (set, frozenset):
            return f"list of {self.type_text(args[0], [], f'{path}.<i>')} (no repeats)"
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"list of {self.type_text(args[0], [], f'{path}.<i>')}"
        if origin is tuple:
            return "[" + ", ".join(self.type_text(arg, [], path) for arg in args) + "]"
        if origin is dict:
            child = f"{path}.{_placeholder(path.rsplit('.', 1)[-1])}"
            return f"mapping from names to {self.items_text(args[1], child)}"
        base = {bool: "boolean", int: "integer", float: "number", str: "string",
                Path: "path", type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))
        text = _bounded(base, constraints)
        if any(isinstance(c, MaxLen) for c in constraints):
            text += " (bounded length)"
        return text

    def items_text(self, tp: Any, path: str) -> str:
        """The items of a list or mapping: `mappings, see <link>` for models."""
        if _is_model(_unwrap(tp)[0]):
            return f"mappings, see {self.link(_unwrap(tp)[0], path, None, None)}"
        return self.type_text(tp, [], path)

    def union_text(self, members: tuple[Any, ...], path: str, default: Any,
                   discriminator: str | None) -> str:
        """`a or b or null`; a union of models tagged by `name` lists its variants."""
        unwrapped = [_unwrap(member) for member in members]
        models = [tp for tp, _ in unwrapped if _is_model(tp)]
        discriminator = discriminator or next(
            (found for _, meta in unwrapped if (found := _discriminator(meta))), None)
        parts = []
        if models and discriminator:
            links = [self.link(model, path, variant, default,
                               label=variant.split(": ", 1)[1].replace(" | ", "`/`"))
                     for model in models
                     if (variant := self.variant(model, discriminator)) is not None]
            parts.append(f"one of these by `{discriminator}`: {', '.join(links)}")
        for member in members:
            tp, _ = _unwrap(member)
            if _is_union(tp):
                parts.append(self.type_text(member, [], path, default, discriminator))
            elif not (_is_model(tp) and discriminator):
                parts.append(self.type_text(member, [], path, default))
        return " or ".join(parts)

    @staticmethod
    def variant(model: type[BaseModel], discriminator: str | None) -> str | None:
        """`name: simclr` for a member of a union tagged by `name`."""
        info = model.model_fields.get(discriminator or "")
        if info is None or get_origin(_unwrap(info.annotation)[0]) is not Literal:
            return None
        values = get_args(_unwrap(info.annotation)[0])
        return f"{discriminator}: {' | '.join(_scalar(v) for v in values)}"


def sections(root: type[BaseModel] = Params) -> list[Section]:
    """Every section of the reference, the root first, then depth first."""
    walker = _Walker()
    walker.model(root, "", None, None)
    return walker.sections


# ---------------------------------------------------------------------------- rendering


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _heading(section: Section) -> str:
    if not section.path:
        return "## Top level"
    depth = len([part for part in section.path.split(".") if not part.startswith("<")])
    variant = f" (`{section.variant}`)" if section.variant else ""
    return f"{'##' if depth == 1 else '###'} `{section.path}`{variant}"


def render_section(section: Section) -> str:
    lines = [f'<a id="{section.anchor}"></a>', "", _heading(section), ""]
    if section.also:
        lines += ["The same keys also at " + ", ".join(f"`{path}`" for path in section.also)
                  + ".", ""]
    if section.doc:
        lines += [section.doc, ""]
    if section.keys:
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        lines += [f"| `{key.name}` | {_cell(key.type)} | {_cell(key.default)} | "
                  f"{_cell(key.doc)} |" for key in section.keys]
        lines.append("")
    return "\n".join(lines)


def render(root: type[BaseModel] = Params) -> str:
    """The whole reference as Markdown."""
    return "\n".join([INTRO, *(render_section(section) for section in sections(root))])


def _section_paths(found: list[Section]) -> dict[int, set[str]]:
    """Every path at which each section's keys apply: its own, the paths that link to it,
    and those of its ancestors' links (a section reached through a linked parent)."""
    paths: dict[int, set[str]] = {}
    for index, section in enumerate(found):  # parents come before their children
        own = {section.path, *section.also}
        for parent_index in range(index):
            parent = found[parent_index].path
            if parent and section.path.startswith(parent + "."):
                rest = section.path[len(parent):]
                own |= {alias + rest for alias in paths[parent_index]}
        paths[index] = own
    return paths


def documented_paths(root: type[BaseModel] = Params) -> set[str]:
    """Every key path the reference documents (placeholders kept), for tests and tools."""
    found = sections(root)
    return {f"{path}.{key.name}" if path else key.name
            for index, paths in _section_paths(found).items()
            for path in paths for key in found[index].keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the parameter reference.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the file differs from the schema, write nothing")
    args = parser.parse_args(argv)
    text = render()
    current = args.out.read_text() if args.out.is_file() else None
    if args.check:
        if current != text:
            print(f"{args.out} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

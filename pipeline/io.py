"""File input and output: a stage either writes complete files or nothing at all, and a
file it cannot read is named in one line."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import UserError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path, missing: str, hint: str = "") -> Any:
    """A JSON file another stage wrote; a missing or unparsable one is one line naming it
    (`missing`: why it may be absent; `hint`: what to run, appended to either error)."""
    path = Path(path)
    hint = f"; {hint}" if hint else ""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {missing}{hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc.__class__.__name__}){hint}") from None


def write_tsv(path: str | Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write rows as a tab-separated table that `dvc plots show` reads; a column a row
    lacks (a metric only some epochs log, like the online probes) is an empty cell."""
    with atomic_path(path) as tmp:
        lines = ["\t".join(columns)]
        lines += ["\t".join(_format(row.get(c, "")) for c in columns) for row in rows]
        tmp.write_text("\n".join(lines) + "\n")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def load_torch_file(path: str | Path, missing: str = "not found",
                    map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`, with any failure as one UserError line.

    torch's own messages run to several lines of advice (and a pickle that would run code
    is refused with the same exception type as random bytes), so they are classified here:
    `missing` says what to do when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {missing}")
    return _load_torch(path, str(path), map_location)


def load_torch_bytes(data: bytes, name: str, map_location: Any = "cpu") -> Any:
    """`load_torch_file` for a file already read (from object storage, say); `name` is
    the file's path or URL, for the one line."""
    return _load_torch(io.BytesIO(data), name, map_location)


def _load_torch(source: Path | io.BytesIO, name: str, map_location: Any) -> Any:
    import torch  # here, not at import: the report stage reads JSON only

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        if isinstance(source, Path):
            with source.open("rb") as file:
                head = file.read(4)
        else:
            head = source.getbuffer()[:4].tobytes()
        raise UserError(f"{name}: {_unreadable_reason(head, exc)}") from None


# A PyTorch file is a zip archive (torch.save's format) or, from torch < 1.6, a pickle
# (protocol 2 or later, so its first byte is PROTO).
_TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")


def _unreadable_reason(head: bytes, error: Exception) -> str:
    """One line on why torch could not load a file (never torch's multi-line advice).

    The file's first bytes (`head`) decide "not a PyTorch file": random bytes reach the
    legacy unpickler, which fails with whatever exception type the bytes happen to provoke.
    """
    if head and not head.startswith(_TORCH_FILE_STARTS):
        return "not a PyTorch file (corrupt, or written by another program)"
    refused = re.search(r"unsupported GLOBAL (\S+)", str(error))
    if refused:
        return (f"refused: a pickle that would load {refused.group(1)} (code, not weights); "
                "only tensors and plain values are read")
    if isinstance(error, EOFError):
        return "empty or truncated file"
    if isinstance(error, RuntimeError) and "zip archive" in str(error):
        return "corrupt or truncated PyTorch file (unreadable zip archive)"
    if isinstance(error, pickle.UnpicklingError | KeyError | ValueError | RuntimeError):
        return "not a PyTorch file (corrupt, or written by another program)"
    return f"unreadable ({type(error).__name__})"

"""Where shards live: a local directory or a URL prefix that every node of a cluster reads.

Object stores and local paths go through pyarrow's filesystems (`s3://`, `gs://`,
`hdfs://`, `abfs://`, `file://`), the layer Ray Train also uses for `ray.storage_path`, so
shards and checkpoints share one set of credentials and endpoints: each store's usual
environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL_S3`, `GOOGLE_APPLICATION_CREDENTIALS`,
...), never params.yaml. `http(s)://` is read with the standard library, and
`pipe:COMMAND` (webdataset's convention) reads a shell command's standard output, with
`{file}` standing for the file name. Every failure is a one-line UserError naming the URL.
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.errors import UserError
from pipeline.params.base import ParamsError
from pipeline.params.data import FILE_PLACEHOLDER, FILESYSTEM_SCHEMES, HTTP_SCHEMES

MANIFEST = "manifest.json"
_BUCKET_SCHEMES = ("s3", "gs", "gcs")
_HTTP_TIMEOUT_S = 60
_COPY_CHUNK = 8 << 20  # bytes per write


def is_url(location: str | Path) -> bool:
    """True for `scheme://...` and `pipe:...`; False for a local path."""
    text = str(location)
    return "://" in text or text.startswith("pipe:")


def scheme(location: str) -> str:
    return "pipe" if location.startswith("pipe:") else urlsplit(location).scheme.lower()


def child(location: str | Path, name: str) -> str:
    """The URL (or path) of file `name` under a shard location."""
    text = str(location)
    if FILE_PLACEHOLDER in text:
        return text.replace(FILE_PLACEHOLDER, name)
    if is_url(text):
        return f"{text.rstrip('/')}/{name}"
    return str(Path(text) / name)


@lru_cache(maxsize=64)
def _filesystem(directory: str):
    """pyarrow filesystem and in-filesystem path of a URL's directory (cached: an S3
    filesystem resolves the bucket's region once, not per shard)."""
    from pyarrow.fs import FileSystem

    return FileSystem.from_uri(directory)


def _resolve(url: str):
    directory, _, name = url.rstrip("/").rpartition("/")
    try:
        filesystem, path = _filesystem(directory)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise UserError(f"{url}: {_first_line(exc)}") from None
    return filesystem, f"{path.rstrip('/')}/{name}"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _missing(url: str, filesystem, path: str) -> str:
    """Why a file is not there: its bucket is missing, or the object is."""
    from pyarrow.fs import FileType

    bucket = path.split("/", 1)[0]
    if scheme(url) in _BUCKET_SCHEMES:
        try:
            if filesystem.get_file_info(bucket).type == FileType.NotFound:
                return f"{url}: bucket '{bucket}' does not exist"
        except OSError:
            pass
    return f"{url}: not found"


def check_bucket(url: str, key: str) -> None:
    """Fail early, naming the params `key`, when an object-store URL's bucket does not
    exist or the store cannot be reached (instead of a traceback from deep inside a
    worker)."""
    if scheme(url) not in _BUCKET_SCHEMES:
        return
    from pyarrow.fs import FileType

    try:
        filesystem, path = _filesystem(url)
        found = filesystem.get_file_info(path.split("/", 1)[0]).type != FileType.NotFound
    except (OSError, ValueError) as exc:
        raise ParamsError([(key, f"{url}: cannot be reached ({_first_line(exc)})")]) from None
    if not found:
        raise ParamsError([(key, f"{url}: bucket '{path.split('/', 1)[0]}' does not exist")])


def _read_filesystem(url: str) -> bytes:
    filesystem, path = _resolve(url)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise UserError(_missing(url, filesystem, path)) from None
    except OSError as exc:
        raise UserError(f"{url}: cannot be read ({_first_line(exc)})") from None


def _read_http(url: str) -> bytes:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise UserError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"{url}: cannot be reached ({reason})") from None


def _read_pipe(url: str) -> bytes:
    result = subprocess.run(url.removeprefix("pipe:"), shell=True, capture_output=True)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise UserError(f"{url}: command exited with status {result.returncode}"
                        + (f" ({detail[-1]})" if detail else ""))
    return result.stdout


def _read_local(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None


def read_bytes(location: str | Path) -> bytes:
    """The whole content of a local file or of a URL (object store, http(s), pipe:)."""
    text = str(location)
    if not is_url(text):
        return _read_local(text)
    kind = scheme(text)
    if kind in FILESYSTEM_SCHEMES:
        return _read_filesystem(text)
    if kind in HTTP_SCHEMES:
        return _read_http(text)
    if kind == "pipe":
        return _read_pipe(text)
    raise UserError(f"{text}: unsupported URL scheme '{kind}' (use one of "
                    f"{', '.join(FILESYSTEM_SCHEMES + HTTP_SCHEMES)}, pipe:)")


def upload(local: Path, url: str) -> str:
    """Copy a local file to a URL (or directory) that pyarrow writes, replacing what is
    there; return the sha256 of the bytes copied."""
    from pyarrow.fs import LocalFileSystem

    if not is_url(url):
        url = Path(url).resolve().as_uri()
    filesystem, path = _resolve(url)
    digest = hashlib.sha256()
    with local.open("rb") as source:
        try:
            if isinstance(filesystem, LocalFileSystem):
                filesystem.create_dir(path.rpartition("/")[0], recursive=True)
            with filesystem.open_output_stream(path) as target:
                for block in iter(lambda: source.read(_COPY_CHUNK), b""):
                    digest.update(block)
                    target.write(block)
            size = filesystem.get_file_info(path).size
        except OSError as exc:  # FileNotFoundError included: a missing bucket
            message = _first_line(exc)
            if isinstance(exc, FileNotFoundError) or "NO_SUCH_BUCKET" in message:
                raise UserError(_missing(url, filesystem, path)) from None
            raise UserError(f"{url}: cannot be written ({message})") from None
    if size != local.stat().st_size:
        raise UserError(f"{url}: {size} bytes after upload, {local} has {local.stat().st_size}")
    return digest.hexdigest()

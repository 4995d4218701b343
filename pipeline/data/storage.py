"""Where shards live, and reading them: a local directory or a URL prefix every node reads.

Two well-kept clients, one retry loop. Object stores and `file://` go through pyarrow's
filesystems (`s3://`, `gs://`, `hdfs://`, `abfs://`), the client Ray Train uses for
`ray.storage_path`, so shards and checkpoints share one set of credentials and endpoints:
each store's usual environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL_S3`,
`GOOGLE_APPLICATION_CREDENTIALS`, ...), never params.yaml. `http(s)://` goes through
fsspec's HTTP filesystem (aiohttp). The clients' own retries are off (S3: one attempt):
every transient failure (HTTP 429 and 5xx, a reset connection, a timeout) is retried here,
with exponential backoff and full jitter, at most `ReadPolicy.attempts` times per request,
and counted (`read_retries`), so a run can report what its reads cost. A read that still
fails is "unreachable": one UserError naming the URL.

Clients are made per process (keyed by pid), so a forked loader process never reuses its
parent's connections; the retry counter lives in shared memory, so it sums over the
loader processes forked from the process that reports it.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from pipeline.errors import UserError
from pipeline.params.base import ParamsError
from pipeline.params.data import FILESYSTEM_SCHEMES, HTTP_SCHEMES

MANIFEST = "manifest.json"
_BUCKET_SCHEMES = ("s3", "gs", "gcs")
_CHUNK = 8 << 20  # bytes per read and per write
T = TypeVar("T")


@dataclass(frozen=True)
class ReadPolicy:
    """How reads retry and how much of one shard a reader may hold (the params keys of
    `datasets.<name>.publish.read`, pipeline.params.ReadConfig, with the same defaults)."""

    attempts: int = 6  # tries per request, the first included
    backoff_s: float = 0.5  # the first wait's upper bound; doubles per retry (full jitter)
    backoff_max_s: float = 30.0  # no wait is drawn above this
    timeout_s: float = 60.0  # connecting, and waiting for the next bytes of a response
    shard_buffer_mb: int = 1024  # a shard is held whole (MiB) to check its sha256 first


_policy = ReadPolicy()
_retries = multiprocessing.Value("q", 0)  # shared with forked loader processes


def configure_reads(policy: ReadPolicy) -> None:
    """Set this process's read policy (loader processes forked later inherit it)."""
    global _policy
    _policy = policy


def read_policy() -> dict[str, Any]:
    """This process's read policy as plain data (what a Ray worker is configured with)."""
    return asdict(_policy)


def read_retries() -> int:
    """Transient read failures retried so far by this process and the loader processes it
    forked: what a run reports as `read_retries`."""
    return int(_retries.value)


def _count_retry() -> None:
    with _retries.get_lock():
        _retries.value += 1


# ------------------------------------------------------------------------------- locations


def is_url(location: str | Path) -> bool:
    """True for `scheme://...`; False for a local path."""
    return "://" in str(location)


def scheme(location: str) -> str:
    return urlsplit(location).scheme.lower()


def child(location: str | Path, name: str) -> str:
    """The URL (or path) of file `name` under a shard location."""
    text = str(location)
    if is_url(text):
        return f"{text.rstrip('/')}/{name}"
    return str(Path(text) / name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------- clients


_clients: dict[tuple[int, str, ReadPolicy], Any] = {}


def _client(key: str, make: Callable[[], Any]) -> Any:
    """One client per (process, key, policy): never one inherited through fork."""
    index = (os.getpid(), key, _policy)
    if index not in _clients:
        _clients[index] = make()
    return _clients[index]


def forget_clients() -> None:
    """Drop this process's clients: the next read makes new ones from the environment as it
    is then (tests and benchmarks that move `AWS_ENDPOINT_URL_S3` to a proxy)."""
    _clients.clear()


def _arrow_filesystem(directory: str):
    """pyarrow filesystem and in-filesystem path of a URL's directory; S3 without the
    SDK's own retries, with `timeout_s` for connecting and for each request."""
    from pyarrow.fs import AwsStandardS3RetryStrategy, FileSystem, S3FileSystem

    def make():
        try:
            filesystem, path = FileSystem.from_uri(directory)
        except ValueError as exc:  # ArrowInvalid: not a URL pyarrow knows
            raise UserError(f"{directory}: {_first_line(exc)}") from None
        if isinstance(filesystem, S3FileSystem):  # the same options, but for these
            options = filesystem.__reduce__()[1][0]
            options.update(connect_timeout=_policy.timeout_s, request_timeout=_policy.timeout_s)
            filesystem = S3FileSystem(
                **options, retry_strategy=AwsStandardS3RetryStrategy(max_attempts=1))
        return filesystem, path

    return _client(f"arrow:{directory}", make)


def _http_filesystem():
    """fsspec's HTTP filesystem with `timeout_s` for connecting and between reads."""
    import aiohttp
    import fsspec

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=_policy.timeout_s,
                                    sock_read=_policy.timeout_s)
    return _client("http", lambda: fsspec.filesystem(
        "http", skip_instance_cache=True, client_kwargs={"timeout": timeout}))


def _resolve(url: str):
    directory, _, name = url.rstrip("/").rpartition("/")
    filesystem, path = _retrying(url, lambda: _arrow_filesystem(directory))
    return filesystem, f"{path.rstrip('/')}/{name}"


# ----------------------------------------------------------------------------- retrying


class _Transient(Exception):
    """A failure worth retrying (429, 5xx, reset, timeout), with a one-line reason."""


class _NotFound(Exception):
    pass


_TRANSIENT_ARROW = re.compile(
    r"SLOW_DOWN|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|THROTTL|NETWORK_CONNECTION|"
    r"REQUEST_TIMEOUT|HTTP (response code:|status) (429|5\d\d)|"
    r"curlCode: (7|18|28|52|55|56)|[Cc]onnection (reset|refused|was closed)|[Tt]imed? ?out|"
    r"[Uu]nexpected end of stream|Broken pipe|Transient")


def _classify(url: str, exc: BaseException) -> BaseException:
    """A raw client error -> _Transient, _NotFound, or a permanent failure."""
    import asyncio

    import aiohttp

    if isinstance(exc, FileNotFoundError):
        return _NotFound()
    if isinstance(exc, aiohttp.ClientResponseError):
        if exc.status == 429 or exc.status >= 500:
            return _Transient(f"HTTP {exc.status} {exc.message}")
        return UserError(f"{url}: HTTP {exc.status} {exc.message}")
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | TimeoutError
                  | ConnectionError):
        return _Transient(_first_line(exc) if str(exc).strip() else
                          f"{type(exc).__name__} (timed out or reset)")
    if isinstance(exc, OSError) and _TRANSIENT_ARROW.search(str(exc)):
        return _Transient(_first_line(exc))
    return exc


def _wait(retry: int) -> float:
    """Full jitter: a uniform draw below min(cap, base * 2^retry)."""
    return random.uniform(0, min(_policy.backoff_max_s, _policy.backoff_s * 2 ** retry))


def _retrying(url: str, attempt: Callable[[], T]) -> T:
    """`attempt()`, retried on transient failures; unreachable after `attempts` tries."""
    for tries in range(1, _policy.attempts + 1):
        try:
            return attempt()
        except (_Transient, _NotFound, UserError):
            raise
        except Exception as exc:
            reason = _classify(url, exc)
            if not isinstance(reason, _Transient):
                raise reason from None
            if tries == _policy.attempts:
                raise UserError(f"{url}: unreachable after {tries} attempts ({reason})"
                                ) from None
            _count_retry()
            time.sleep(_wait(tries - 1))
    raise AssertionError("unreachable")  # attempts >= 1


# --------------------------------------------------------------------------------- reading


def _open(url: str) -> BinaryIO:
    """One request's response body as a stream (no retry here)."""
    if scheme(url) in HTTP_SCHEMES:
        return _http_filesystem().open(url, "rb", block_size=0, size=-1)
    filesystem, path = _resolve(url)
    return filesystem.open_input_stream(path)


def _read_capped(url: str, sha256: str, capped: bool = True) -> bytes:
    """One attempt: the body, hashed as it arrives, at most shard_buffer_mb if `capped`.

    The blocks are appended to one growing buffer, whose bytes `getvalue` hands over
    without a copy: the shard is held once (and one block), not as pieces plus their join.
    """
    limit = _policy.shard_buffer_mb << 20 if capped else float("inf")
    digest, buffer = hashlib.sha256(), io.BytesIO()
    with _open(url) as stream:
        while block := stream.read(_CHUNK):
            if buffer.tell() + len(block) > limit:
                raise UserError(f"{url}: larger than the shard buffer ({_policy.shard_buffer_mb}"
                                " MiB, publish.read.shard_buffer_mb); write smaller shards "
                                "(shards.samples_per_shard) or raise it")
            digest.update(block)
            buffer.write(block)
            del block
    if sha256 and digest.hexdigest() != sha256:
        raise ValueError("sha256 differs from the manifest")
    return buffer.getvalue()


def _read_local(path: str, sha256: str, capped: bool = True) -> bytes:
    try:
        size = Path(path).stat().st_size
        if capped and size > _policy.shard_buffer_mb << 20:
            raise UserError(f"{path}: larger than the shard buffer ({_policy.shard_buffer_mb} "
                            "MiB); write smaller shards (shards.samples_per_shard)")
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError("sha256 differs from the manifest")
    return data


def read_bytes(location: str | Path, sha256: str = "", capped: bool = True) -> bytes:
    """The whole content of a local file or a URL, read with retries, at most
    `shard_buffer_mb` if `capped` (shards; a checkpoint is sized by its model, not the
    data); with `sha256`, a ValueError unless the bytes have that digest."""
    text = str(location)
    if not is_url(text):
        return _read_local(text, sha256, capped)
    if scheme(text) not in (*FILESYSTEM_SCHEMES, *HTTP_SCHEMES):
        raise UserError(f"{text}: unsupported URL scheme '{scheme(text)}' (use one of "
                        f"{', '.join(FILESYSTEM_SCHEMES + HTTP_SCHEMES)})")
    try:
        return _retrying(text, lambda: _read_capped(text, sha256, capped))
    except _NotFound:
        raise UserError(_missing(text)) from None
    except OSError as exc:
        raise UserError(f"{text}: cannot be read ({_first_line(exc)})") from None


def _missing(url: str) -> str:
    """Why a file is not there: its bucket is missing, or the object is."""
    from pyarrow.fs import FileType

    if scheme(url) in HTTP_SCHEMES:
        return f"{url}: HTTP 404 Not Found"

    if scheme(url) in _BUCKET_SCHEMES:
        try:
            filesystem, path = _resolve(url)
            bucket = path.split("/", 1)[0]
            if filesystem.get_file_info(bucket).type == FileType.NotFound:
                return f"{url}: bucket '{bucket}' does not exist"
        except (OSError, UserError):
            pass
    return f"{url}: not found"


def check_bucket(url: str, key: str) -> None:
    """Fail early, naming the params `key`, when an object-store URL's bucket does not
    exist or the store cannot be reached (instead of a traceback from deep inside a
    worker)."""
    if scheme(url) not in _BUCKET_SCHEMES:
        return
    from pyarrow.fs import FileType

    def bucket_found() -> tuple[bool, str]:
        filesystem, path = _arrow_filesystem(url)
        bucket = path.split("/", 1)[0]
        return filesystem.get_file_info(bucket).type != FileType.NotFound, bucket

    try:
        found, bucket = _retrying(url, bucket_found)
    except (OSError, ValueError, UserError) as exc:  # ArrowInvalid is a ValueError
        raise ParamsError([(key, f"{url}: cannot be reached ({_first_line(exc)})")]) from None
    if not found:
        raise ParamsError([(key, f"{url}: bucket '{bucket}' does not exist")])


Tree = dict[str, tuple[list[str], list[str]]]  # folder -> (its folders, its files)


def list_tree(location: str) -> Tree | None:
    """Every folder under a local directory or a URL prefix (relative paths, "" for the
    location itself), with the sorted names of the folders and of the files directly in
    it, from one recursive listing (in an object store, the folders are the prefixes of
    its keys); None when nothing is there."""
    from pyarrow.fs import FileSelector, FileType

    url = location if is_url(location) else Path(location).resolve().as_uri()

    def listing():
        filesystem, base = _arrow_filesystem(url)
        return base, filesystem.get_file_info(FileSelector(base, recursive=True))

    try:
        base, infos = _retrying(url, listing)
    except _NotFound:
        return None
    except OSError as exc:
        message = _first_line(exc)
        if "NO_SUCH_BUCKET" in message:
            raise UserError(_missing(url)) from None
        raise UserError(f"{location}: cannot be listed ({message})") from None
    folders: dict[str, tuple[set[str], set[str]]] = {"": (set(), set())}
    for info in infos:
        relative = info.path[len(base):].strip("/")
        kind = 0 if info.type == FileType.Directory else 1
        while relative:  # the entry, then every folder above it
            parent, _, name = relative.rpartition("/")
            folders.setdefault(parent, (set(), set()))[kind].add(name)
            relative, kind = parent, 0
    return {folder: (sorted(dirs), sorted(files)) for folder, (dirs, files) in folders.items()}


# --------------------------------------------------------------------------------- writing


class UploadError(UserError):
    """A file that could not be written to its URL (a stage names the params key of the
    URL); raised where the upload runs, a Ray task included."""


def _upload_once(local: Path, url: str) -> str:
    from pyarrow.fs import LocalFileSystem

    filesystem, path = _resolve(url)
    digest = hashlib.sha256()
    if isinstance(filesystem, LocalFileSystem):
        filesystem.create_dir(path.rpartition("/")[0], recursive=True)
    with local.open("rb") as source, filesystem.open_output_stream(path) as target:
        for block in iter(lambda: source.read(_CHUNK), b""):
            digest.update(block)
            target.write(block)
    size = filesystem.get_file_info(path).size
    if size != local.stat().st_size:
        raise UploadError(f"{url}: {size} bytes after upload, "
                          f"{local} has {local.stat().st_size}")
    return digest.hexdigest()


def upload(local: Path, url: str) -> str:
    """Copy a local file to a URL (or directory) that pyarrow writes, replacing what is
    there, with retries; return the sha256 of the bytes copied."""
    if not is_url(url):
        url = Path(url).resolve().as_uri()
    try:
        return _retrying(url, lambda: _upload_once(local, url))
    except (_NotFound, FileNotFoundError):
        raise UploadError(_missing(url)) from None
    except UploadError:
        raise
    except UserError as exc:  # unreachable after its retries
        raise UploadError(str(exc)) from None
    except OSError as exc:
        message = _first_line(exc)
        if "NO_SUCH_BUCKET" in message:
            raise UploadError(_missing(url)) from None
        raise UploadError(f"{url}: cannot be written ({message})") from None

"""Where a path lives: this machine's disk, or an object store named by an fsspec URL.

Every path a stage reads or writes goes through `as_path`: a path with no scheme (or
``file://``) is a `pathlib.Path`, as it always was; ``s3://``, ``gs://``, ``az://``/``abfs://``
and ``memory://`` are `upath.UPath`s over fsspec, which answer the same calls (``/``, ``name``,
``is_file``, ``iterdir``, ``read_bytes``) against the store. What a store cannot do like a disk
(rename, flock) is done in `files`, the one writer, and nowhere else.

The filesystem options (``--storage_options``: an endpoint, a profile, anonymous access) are
set once per process with `use_storage_options`: the driver sets them from the stage's
options and each worker from the same options when it is built, so a task carries only
strings. Credentials come from each filesystem's own chain (environment variables, profiles);
parla never prints the options.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from parla.errors import UsageError

# scheme -> (the package that implements it, parla's extra that installs it)
FILESYSTEMS: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure"),
    "memory": ("fsspec", ""),  # fsspec's own, in memory: for tests
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

_storage_options: dict[str, Any] = {}

T = TypeVar("T")
R = TypeVar("R")

AnyPath = Any  # a pathlib.Path or a upath.UPath: both answer the pathlib calls parla makes


def scheme(path: str | os.PathLike) -> str:
    """The URL scheme of ``path`` ("" for a local path)."""
    match = _SCHEME.match(str(path) if _is_upath(path) else os.fspath(path))
    return match[1].lower() if match else ""


def is_remote(path: str | os.PathLike) -> bool:
    """True for a path on an object store (any scheme but ``file``)."""
    return scheme(path) not in ("", "file")


def _is_upath(path: Any) -> bool:
    return type(path).__module__.startswith("upath")


def use_storage_options(options: Mapping[str, Any] | None) -> None:
    """Set the filesystem options every later `as_path` uses in this process."""
    _storage_options.clear()
    _storage_options.update(options or {})


def current_storage_options() -> dict[str, Any]:
    """The options `use_storage_options` set (handed to the workers by the runner)."""
    return dict(_storage_options)


def require_filesystem(path: str | os.PathLike) -> None:
    """UsageError (exit 2) naming the extra to install when ``path``'s filesystem is missing."""
    name = scheme(path)
    if name in ("", "file"):
        return
    if name not in FILESYSTEMS:
        raise UsageError(f"{path}: parla reads and writes local paths and s3://, gs://, az:// "
                         f"(abfs://) and memory:// URLs, not {name}://")
    package, extra = FILESYSTEMS[name]
    if importlib.util.find_spec(package) is None:
        raise UsageError(f"{path} needs {package}: pip install 'parla[{extra}]'")


def as_path(path: str | os.PathLike) -> AnyPath:
    """``path`` as a Path (local, ``~`` expanded) or a UPath (an object store URL)."""
    if _is_upath(path):
        return path
    if isinstance(path, Path):
        return path.expanduser()
    text = os.fspath(path)
    if scheme(text) == "file":
        return Path(text.partition("://")[2]).expanduser()
    if not is_remote(text):
        return Path(text).expanduser()
    require_filesystem(text)
    from upath import UPath

    return UPath(text.rstrip("/"), **_storage_options)


def filesystem(path: AnyPath) -> tuple[Any, str]:
    """(fsspec filesystem, the path inside it) of a remote path, for pyarrow and bulk calls."""
    path = as_path(path)
    return path.fs, path.path


def forget_listings(path: AnyPath) -> None:
    """Drop fsspec's cached listings of ``path``'s store: workers in other processes wrote
    there (fsspec forgets a path and its parents, not what is below it, so all of them)."""
    if is_remote(path):
        filesystem(path)[0].invalidate_cache()


def store_timeout(size: int = 0) -> float:
    """Seconds a store may take to answer one call about ``size`` bytes before parla calls it
    stalled: ``PARLA_STORE_TIMEOUT_S`` (120 by default) plus a second a megabyte."""
    try:
        base = float(os.environ.get("PARLA_STORE_TIMEOUT_S", "") or 120)
    except ValueError:
        base = 120.0
    return base + size / 1e6


def bounded(fs: Any, method: str, *args: Any, size: int = 0, **kwargs: Any) -> Any:
    """``fs.<method>(*args)`` with a deadline: a store that stops answering mid-call (a write
    whose reply never comes has no timeout in aiohttp) is a TimeoutError, not a hang. The
    object-store filesystems are async; their coroutine runs on fsspec's loop under the
    deadline."""
    timeout = store_timeout(size)
    if not getattr(fs, "async_impl", False):
        return getattr(fs, method)(*args, **kwargs)
    from fsspec.asyn import FSTimeoutError, sync

    try:
        return sync(fs.loop, getattr(fs, f"_{method}"), *args, timeout=timeout, **kwargs)
    except FSTimeoutError:
        raise TimeoutError(f"the store stopped answering ({method} {args[-1] if args else ''}"
                           f" had no reply in {timeout:.0f} s); check the endpoint and the "
                           "network, then run again (finished shards are kept)") from None


IO_THREADS = 8  # calls in flight to a store at once: each waits on the network, not the CPU


def map_io(function: Callable[[T], R], items: Iterable[T], *, concurrent: bool) -> list[R]:
    """``[function(item) for item in items]``, in order; with ``concurrent`` (the items are on a
    store) up to IO_THREADS calls at once, so a folder of small reads or writes costs a few
    round trips instead of one each. The first error is raised, as the loop would."""
    items = list(items)
    if not concurrent or len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(IO_THREADS, len(items)), thread_name_prefix="parla-io") as pool:
        return list(pool.map(function, items))


def open_ranges(path: str | os.PathLike) -> Any:
    """A binary file for reading: a local one as it is; on a store, one that fetches exactly
    the ranges read (fsspec's default read-ahead of 50 MB would fetch, and hold, up to that
    much for every open file: a whole shard to read its footer)."""
    path = as_path(path)
    if is_remote(path):
        fs, inner = filesystem(path)
        return fs.open(inner, "rb", cache_type="none")
    return open(path, "rb")


def _without_userinfo(text: str) -> str:
    """An error's text with any ``user:password@`` of a URL in it masked (an endpoint_url may
    carry credentials, and botocore echoes the endpoint)."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


def check_reachable(path: AnyPath, what: str) -> None:
    """One clear line for a store that cannot be used at all: options its filesystem does not
    take or a missing bucket (UsageError, exit 2), refused credentials (UsageError), a store
    that does not answer (EnvironmentFailure, exit 1)."""
    from parla.errors import EnvironmentFailure

    if not is_remote(path):
        return
    try:
        fs, inner = filesystem(path)
        bucket = inner.split("/", 1)[0]
        fs.info(bucket) if bucket else None
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: the bucket {bucket} does not exist (or these "
                         "credentials cannot see it)") from None
    except PermissionError:
        raise UsageError(f"{what} {path}: access denied to {bucket}; check the credentials "
                         "(environment variables, profile) and --storage_options") from None
    except (TypeError, ValueError) as error:  # an option the filesystem does not take
        raise UsageError(f"{what} {path}: --storage_options does not suit "
                         f"{scheme(path)}:// ({type(error).__name__}: "
                         f"{_without_userinfo(str(error))[:160]})") from None
    except Exception as error:  # botocore, aiohttp and the like: the store is not answering
        raise EnvironmentFailure(f"{what} {path}: the store did not answer "
                                 f"({type(error).__name__}: "
                                 f"{_without_userinfo(str(error))[:160]}); check the "
                                 "endpoint and the network, then run again") from None

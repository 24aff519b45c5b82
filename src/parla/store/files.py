"""The one place that writes files atomically, removes folders, and cleans up after killed runs.

On a disk every output (shards, reports, the card) is written to a temporary name beside its
final one and renamed into place, so a file that exists is complete; a killed run leaves only
temporary files, which `remove_stale_tmp` deletes. On an object store there is no rename, and
none is needed: the file is written locally and sent with one PUT (or a multipart upload that
is completed only when whole, and aborted on failure), so an object is either absent or whole.
A multipart upload cut off by parla's deadline (`urls.bounded` cancels it) is not aborted: its
parts stay invisible, but S3 keeps them until a lifecycle rule (AbortIncompleteMultipartUpload)
removes them; docs/SCALING.md says to set one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from parla.store.urls import AnyPath, as_path, bounded, filesystem, is_remote

TMP_SUFFIX = ".tmp"


def tmp_path_for(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed to ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a local temporary path to write; on success it becomes ``path`` whole.

    On any error (a full disk, a signal, a store that stops answering) the temporary file is
    removed and ``path`` is left as it was.
    """
    path = as_path(path)
    if is_remote(path):
        with _uploaded(path) as tmp:
            yield tmp
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        with open(tmp, "rb") as handle:  # the data must be on disk before the name says so
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _uploaded(path: AnyPath) -> Iterator[Path]:
    """A local scratch file that is uploaded to ``path`` once written (fsspec's put_file: one
    PUT, or a multipart upload completed last and aborted on error)."""
    handle, name = tempfile.mkstemp(prefix=".parla-", suffix=TMP_SUFFIX)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        fs, inner = filesystem(path)
        bounded(fs, "put_file", str(tmp), inner, size=tmp.stat().st_size)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> AnyPath:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return as_path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> AnyPath:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> AnyPath:
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Any) -> AnyPath:
    return write_text_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n"
                                           for record in records))


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a file or a folder and everything under it, on a disk or a store; absent is fine."""
    path = as_path(path)
    if is_remote(path):
        fs, inner = filesystem(path)
        if fs.exists(inner):
            fs.rm(inner, recursive=True)
        fs.invalidate_cache(inner)
    elif path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete the temporary files that killed runs left anywhere under ``folder``; how many.
    (A store has none: what a killed upload leaves is never visible.)"""
    folder = as_path(folder)
    if is_remote(folder) or not folder.is_dir():
        return 0
    count = 0
    for tmp in folder.rglob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count

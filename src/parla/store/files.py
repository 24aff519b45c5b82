"""The one place that writes files atomically, cleans up after killed runs, and locks a folder.

Every output (shards, reports, the card) is written to a temporary name beside its final one
and renamed into place, so a file that exists is complete; a killed run leaves only temporary
files, which `remove_stale_tmp` deletes. A stage holds `lock_folder` on its output folder for
the whole run, so two runs can never interleave their writes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from parla.errors import UsageError

TMP_SUFFIX = ".tmp"
LOCK_FILE = ".parla.lock"


def tmp_path_for(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed to ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is synced and renamed to ``path``.

    On any error (a full disk, a signal) the temporary file is removed and ``path`` is left as
    it was.
    """
    path = Path(path)
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Any) -> Path:
    return write_text_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n"
                                           for record in records))


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete the temporary files that killed runs left anywhere under ``folder``; how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    count = 0
    for tmp in folder.rglob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the duration.

    The lock is an ``flock`` on a file inside the folder, so the kernel drops it when the
    holding process dies however it dies: a lock left by a killed run never blocks the next.
    A second run into the same folder gets a UsageError naming the running process.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UsageError(f"{folder} is in use by another parla run ({holder}); wait for "
                             "it to finish or choose another output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock

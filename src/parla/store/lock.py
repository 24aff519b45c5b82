"""One run per output: the lock a stage holds on its output folder or URL for the whole run.

On a disk it is an ``flock`` on a file inside the folder, so the kernel drops it when the
holding process dies however it dies. An object store has no flock: the lock is an object made
with a conditional create (S3 ``If-None-Match: *``, a GCS generation precondition, Azure's
no-overwrite upload), holding its owner and an expiry that the running driver renews. A crashed
run's lock is taken over once it has expired, or at once with ``break_lock``; on S3 the
takeover and each renewal replace only the version read (``If-Match``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from parla.errors import EnvironmentFailure, UsageError
from parla.progress import get_logger
from parla.store.urls import AnyPath, as_path, bounded, filesystem, is_remote, scheme

log = get_logger("lock")

LOCK_FILE = ".parla.lock"
LEASE_SECONDS = 120.0  # a remote lock not renewed for this long belongs to a dead run
# the filesystems whose pipe_file(mode="create") is a create-if-absent on the store itself
CONDITIONAL_CREATE = ("S3FileSystem", "GCSFileSystem", "AzureBlobFileSystem", "MemoryFileSystem")


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike, *, break_lock: bool = False,
                lease_seconds: float = LEASE_SECONDS) -> Iterator[None]:
    """Hold the one lock on ``folder`` (a local folder, created if missing, or a URL) for the
    duration; a second run gets a UsageError naming the holder."""
    folder = as_path(folder)
    if is_remote(folder):
        with _remote_lock(folder, break_lock, lease_seconds):
            yield
    else:
        with _local_lock(folder):
            yield


def _in_use(folder: Any, holder: str, how: str = "") -> UsageError:
    return UsageError(f"{folder} is in use by another parla run ({holder}); wait for it to "
                      f"finish{how} or choose another output folder")


def _owner() -> str:
    return f"pid {os.getpid()} on {os.uname().nodename}"


@contextlib.contextmanager
def _local_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            raise _in_use(folder, handle.read().strip() or "another process") from None
        handle.seek(0)
        handle.truncate()
        handle.write(_owner())
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock


class RemoteLock:
    """The lock object of one run on a store: created if absent, renewed, deleted at the end.

    Where the store can replace an object only if it is still the version read (S3's
    ``If-Match``), a takeover and a renewal are such replacements, so of two runs taking over
    one expired lock only one wins, and a renewal never overwrites another run's lock. Other
    stores replace it by delete-then-create, which two takers can both win (the docs say so).
    """

    def __init__(self, folder: AnyPath, lease_seconds: float) -> None:
        self.fs, inner = filesystem(folder)
        self.folder, self.key, self.lease = folder, f"{inner}/{LOCK_FILE}", lease_seconds
        self.token = uuid.uuid4().hex
        self.guard = threading.Lock()  # a renewal and the release never overlap
        self.released = False
        self.lost = False  # a renewal found another run's lock

    def body(self) -> bytes:
        return json.dumps({"owner": _owner(), "token": self.token,
                           "expires": time.time() + self.lease}).encode()

    @property
    def replaces_by_version(self) -> bool:
        return type(self.fs).__name__ == "S3FileSystem"

    def create(self) -> bool:
        """Make the lock object if there is none; False when another run's is there."""
        return self._write_if(mode="create")

    def honours_create(self) -> bool:
        """Whether a second create of the lock just made is refused: an old s3fs or botocore
        drops the condition, and some S3-compatible stores ignore it (the write then only
        rewrites this run's own lock)."""
        return not self.create()

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        """(the lock object's contents, its version), or (None, None) when it is gone; the
        contents are {} when unreadable. The version is read first: contents newer than it
        make a replacement conditioned on it fail, which is the safe way round."""
        self.fs.invalidate_cache(self.key)
        try:
            version = (bounded(self.fs, "info", self.key).get("ETag")
                       if self.replaces_by_version else None)
            value = json.loads(bounded(self.fs, "cat_file", self.key))
        except FileNotFoundError:
            return None, None
        except ValueError:
            return {}, None
        return (value if isinstance(value, dict) else {}), version

    def holder(self) -> dict[str, Any] | None:
        return self.read()[0]

    def replace(self, version: str | None) -> bool:
        """Write this run's lock over the version read; False when another run changed it
        first. Without a version (a store that cannot condition on one), delete and create."""
        if version is None:
            bounded(self.fs, "rm_file", self.key)
            return self.create()
        try:
            return self._write_if(IfMatch=version)
        except FileNotFoundError:  # deleted since it was read: another run is at it
            return False

    def _write_if(self, **condition: Any) -> bool:
        """Write this run's lock under a store-side condition; False when the store refuses it
        (the object exists, or has changed)."""
        try:
            bounded(self.fs, "pipe_file", self.key, self.body(), **condition)
        except FileExistsError:
            return False
        except OSError as error:
            if _refused(error):
                return False
            raise
        return True

    def renew(self) -> bool:
        """Push the expiry on; False when the lock is no longer this run's (taken over)."""
        with self.guard:
            if self.released:
                return True
            held, version = self.read()
            if (held or {}).get("token") != self.token:
                return False
            if version is not None:
                return self.replace(version)
            bounded(self.fs, "pipe_file", self.key, self.body())  # no version to condition on
            return True

    def release(self) -> None:
        """Delete the lock if it is still this run's; a store that does not answer now leaves
        it to expire (the run is ending anyway, perhaps because of that store)."""
        if not self.guard.acquire(timeout=self.lease / 3):  # a renewal stuck on the store
            log.debug("could not remove the lock on %s (a renewal is still waiting on the "
                      "store); it expires in at most %.0f s", self.folder, self.lease)
            return
        try:
            self.released = True
            if (self.holder() or {}).get("token") == self.token:
                bounded(self.fs, "rm_file", self.key)
        except Exception as error:  # botocore's errors are not all OSErrors
            # debug: the run's own error line already names the store that failed it
            log.debug("could not remove the lock on %s (%s); it expires in at most %.0f s",
                      self.folder, type(error).__name__, self.lease)
        finally:
            self.guard.release()


def _refused(error: OSError) -> bool:
    """A store's "the condition did not hold" (s3fs raises it as a plain OSError)."""
    text = str(error).lower()
    return "precondition" in text or "pre-condition" in text or "exists" in text


@contextlib.contextmanager
def _remote_lock(folder: AnyPath, break_lock: bool, lease_seconds: float) -> Iterator[None]:
    lock = RemoteLock(folder, lease_seconds)
    known = type(lock.fs).__name__ in CONDITIONAL_CREATE
    _acquire(lock, break_lock)
    if not known or not lock.honours_create():
        log.warning("%s does not refuse a second create of the same object (%s): a second "
                    "run into %s at the same time would not be stopped",
                    scheme(folder) + "://", "an unknown filesystem" if not known
                    else "the condition was dropped: s3fs >= 2024.12 is needed", folder)
    stop = threading.Event()
    renewer = threading.Thread(target=_keep_renewed, args=(lock, stop), daemon=True,
                               name="parla-lock")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        lock.release()
    if lock.lost:  # the stage finished, but another run wrote here meanwhile
        raise EnvironmentFailure(f"the lock on {folder} was taken over by another run while "
                                 "this one ran (an expired lease or --break_lock); what both "
                                 "wrote may be mixed: run again when the other run has ended")


def _acquire(lock: RemoteLock, break_lock: bool) -> None:
    try:
        if lock.create():
            return
        held, version = lock.read()
        held = held or {}
        expired = float(held.get("expires", 0)) < time.time()
        if not (break_lock or expired):
            left = float(held.get("expires", 0)) - time.time()
            raise _in_use(lock.folder, held.get("owner", "another run"),
                          f" (or, if it crashed, for its lock to expire in {left:.0f} s, or "
                          "pass --break_lock)")
        log.warning("taking over the lock on %s from %s (%s)", lock.folder,
                    held.get("owner", "a run"), "--break_lock" if break_lock else "expired")
        if not lock.replace(version):  # another run took it over first
            raise _in_use(lock.folder, (lock.holder() or {}).get("owner", "another run"))
    except (UsageError, EnvironmentFailure):
        raise
    except OSError as error:
        raise EnvironmentFailure(f"cannot lock {lock.folder}: {type(error).__name__}: "
                                 f"{str(error)[:200]}") from None


def _keep_renewed(lock: RemoteLock, stop: threading.Event) -> None:
    while not stop.wait(lock.lease / 3):
        try:
            if not lock.renew():
                lock.lost = True
                log.warning("the lock on %s was taken over by another run", lock.folder)
                return
        except Exception as error:  # the next renewal may get through; the lease has slack
            log.warning("renewing the lock on %s failed (%s); trying again in %.0f s",
                        lock.folder, type(error).__name__, lock.lease / 3)

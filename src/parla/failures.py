"""How a failure ends a command: one line on stderr and an exit code.

`run_command` runs a command and turns every failure into one line: 2 for bad input
(`UsageError`), 1 for the environment (`ParlaError`, a full disk, a file that cannot be written),
130 for SIGINT and 143 for SIGTERM (raised as `Terminated` so the run unwinds and its workers
stop). The CLI and `python -m parla.report` share it.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from parla.errors import ParlaError, Terminated, UsageError

EXIT_ENVIRONMENT = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
# a line break as str.splitlines sees one, with the whitespace around it
_LINE_BREAK = re.compile(r"\s*[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]\s*")


def one_line(message: str) -> str:
    """A message as one line: each line break, with the whitespace around it, becomes one space
    (text quoted from the Hub, Ray or a library may have several lines)."""
    return _LINE_BREAK.sub(" ", message).strip()


def _notes(error: BaseException) -> str:
    """What was added to an error on its way (the engines name the task a worker failed in)."""
    notes = getattr(error, "__notes__", None)
    return f" ({'; '.join(notes)})" if notes else ""


def _say(message: str) -> None:
    print(one_line(message), file=sys.stderr)


_STORE_CLIENTS = ("botocore", "aiobotocore", "aiohttp", "urllib3", "google", "azure")


def _environment_error(error: BaseException) -> OSError | None:
    """The OSError behind a failure, if any: raised as it is, or as the explicit cause
    (``raise ... from``) of what an engine raised for a worker's failure."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        if type(current).__module__.split(".")[0] in _STORE_CLIENTS:
            # an object store's client failing (a timeout, a refused connection, an HTTP
            # error): the environment, like an OSError, whatever its own class
            return OSError(f"the object store failed ({type(current).__name__}: "
                           f"{str(current)[:200]}); check the endpoint and the network, then "
                           "run again (finished shards are kept)")
        seen.add(id(current))
        current = current.__cause__
    return None


def describe_environment_error(error: OSError) -> str:
    """One line for a failed system call: what happened, to which file, and what to do."""
    code = error.errno
    text = str(error)
    if code is None:  # pyarrow and others put the errno text in the message only
        if "No space left" in text:
            code = errno.ENOSPC
        elif "File too large" in text:
            code = errno.EFBIG
    where = f" ({error.filename})" if getattr(error, "filename", None) else ""
    if code in _DISK_FULL:
        return (f"the disk is full{where}: {os.strerror(code)}; free some space and run the same "
                "command again to resume (finished shards are kept)")
    if code in _NOT_WRITABLE:
        return (f"cannot write{where}: {os.strerror(code)}; give a folder you may write to, or "
                "fix its permissions")
    if isinstance(error, ConnectionError) or code in (errno.ENETUNREACH, errno.EHOSTUNREACH,
                                                      errno.ECONNREFUSED, errno.ETIMEDOUT):
        return f"network failure{where}: {error.strerror or text}; check the connection and rerun"
    reason = error.strerror or (text.splitlines() or [type(error).__name__])[0]
    return f"{reason}{where}"


class _TerminationSignal:
    """While a command runs: SIGTERM raises Terminated in the main thread, so the run unwinds
    like Ctrl-C (files closed, workers stopped); a second SIGTERM ends the process at once.
    SIGXFSZ (a file-size limit reached) is ignored, so the write fails with EFBIG, one line."""

    def __enter__(self) -> _TerminationSignal:
        self._saved: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        self._saved[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._terminate)
        if hasattr(signal, "SIGXFSZ"):
            self._saved[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        return self

    @staticmethod
    def _terminate(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run a command and turn every failure into one stderr line and an exit code: 2 for bad
    input, 1 for the environment (disk, permissions, network, the Hub), 130 for SIGINT, 143 for
    SIGTERM. Anything else is a bug in parla and keeps its traceback. The line is one line even
    when the error quotes text with line breaks."""
    try:
        with _TerminationSignal():
            return command()
    except UsageError as error:
        _say(f"{prog}: error: {error}{_notes(error)}")
        return EXIT_USAGE
    except ParlaError as error:
        _say(f"{prog}: {error}{_notes(error)}")
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished shards are kept, rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"{prog}: terminated (SIGTERM); finished shards are kept, rerun to resume",
              file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as error:
        cause = _environment_error(error)
        if cause is None:
            raise
        _say(f"{prog}: {describe_environment_error(cause)}{_notes(error)}")
        return EXIT_ENVIRONMENT

"""Exceptions and the record of a dropped row.

Only one error is tolerated per row (`RowRejected`); anything else is a bug and propagates.
`UsageError` is bad input from the user: the CLI prints it on one line and exits 2.
`EnvironmentFailure` is the machine or the network failing (a dead worker, an unreachable Ray
cluster): one line and exit 1; the output is kept and a rerun resumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


class ParlaError(Exception):
    """Base class of every error parla raises on purpose."""


class UsageError(ParlaError, ValueError):
    """Bad arguments, unknown sources or unwritable outputs: reported before any work, exit 2."""


class SourceError(UsageError):
    """A `--datasets` entry that cannot be read."""


class EnvironmentFailure(ParlaError):
    """The machine or the network failed; finished output is kept and a rerun resumes."""


class WorkerDied(EnvironmentFailure):
    """A worker process died (killed, out of memory, crashed in native code)."""


class RowRejected(ParlaError):
    """A row that cannot be training data (bad audio, bad text, a quality rule): it is skipped,
    counted and listed in rejects.jsonl with ``reason``, and the run goes on."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Reject:
    """One dropped row, as written to `rejects.jsonl`."""

    source_path: str
    dialect: str
    reason: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class Terminated(BaseException):
    """SIGTERM, turned into an exception by the CLI so the run unwinds (finally blocks close
    files, engines stop their workers) and exits 143. A BaseException, like KeyboardInterrupt:
    ``except Exception`` must not swallow it."""


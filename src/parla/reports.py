"""Reports written next to the data: statistics, speaker metadata, rejects, and the summary."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from .errors import Reject

STATISTICS_FILE = "dialect_statistics.json"
SPEAKERS_FILE = "speaker_metadata.json"
REJECTS_FILE = "rejects.jsonl"
REPORT_FILES = (STATISTICS_FILE, SPEAKERS_FILE, REJECTS_FILE, "README.md")


def write_json(path: str | os.PathLike, data: Any) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


class RejectLog:
    """Appends one JSON line per dropped row as it happens, and counts reasons per dialect."""

    def __init__(self, path: str | os.PathLike | None, append: bool = False) -> None:
        self.path = Path(path) if path else None
        # line-buffered: a line reaches the file before the row's shard can be finished, so a
        # run killed at any moment never loses the reject of a row it will not process again
        self._handle: IO[str] | None = (open(path, "a" if append else "w", encoding="utf-8",
                                             buffering=1) if path else None)
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, reject: Reject) -> None:
        by_reason = self.counts.setdefault(reject.dialect or "unknown", {})
        by_reason[reject.reason] = by_reason.get(reject.reason, 0) + 1
        if self._handle is not None:
            self._handle.write(json.dumps(reject.to_dict(), ensure_ascii=False) + "\n")

    def extend(self, rejects: Iterable[Reject]) -> None:
        for reject in rejects:
            self.add(reject)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def finalize(self) -> None:
        """Rewrite the file with one line per rejected clip, sorted, and recount from it.

        A resumed run meets some clips again; the file must not depend on how often it was.
        """
        self.close()
        if self.path is None or not self.path.exists():
            return
        lines = sorted(set(self.path.read_text(encoding="utf-8").splitlines()) - {""},
                       key=lambda line: (json.loads(line)["dialect"],
                                         json.loads(line)["source_path"], line))
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, self.path)
        self.counts = {}
        for line in lines:
            record = json.loads(line)
            by_reason = self.counts.setdefault(record["dialect"] or "unknown", {})
            by_reason[record["reason"]] = by_reason.get(record["reason"], 0) + 1

    def total(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.counts.values())


def format_counts_table(title: str, steps: Iterable[Mapping[str, Any]]) -> str:
    """The per-step table that --dry_run and the final summary print."""
    lines = [title, f"  {'step':<26}{'rows':>9}{'speakers':>10}{'hours':>10}"]
    for step in steps:
        lines.append(f"  {step['step']:<26}{step['rows']:>9}{step['speakers']:>10}"
                     f"{step['hours']:>10.2f}")
    return "\n".join(lines)


def format_summary(statistics: Mapping[str, Any]) -> str:
    """Final summary like the original scripts': rows, speakers, samples/speaker, hours."""
    lines = ["", "=" * 72, f"{'dialect':<18}{'rows':>8}{'speakers':>10}{'per spk':>9}"
             f"{'hours':>8}{'rejected':>10}", "-" * 72]
    for name, dialect in statistics["dialects"].items():
        out = dialect["output"]
        lines.append(f"{name:<18}{out['rows']:>8}{out['speakers']:>10}"
                     f"{out['samples_per_speaker']:>9.1f}{out['hours']:>8.2f}"
                     f"{sum(dialect['rejected'].values()):>10}")
    total = statistics["total"]
    lines += ["-" * 72, f"{'total':<18}{total['rows']:>8}{total['speakers']:>10}"
              f"{total['samples_per_speaker']:>9.1f}{total['hours']:>8.2f}"
              f"{total['rejected']:>10}",
              f"all: {total['train_rows']} train / {total['validation_rows']} validation rows, "
              f"{total['validation_speakers']} validation speakers (none in train)", "=" * 72]
    return "\n".join(lines)

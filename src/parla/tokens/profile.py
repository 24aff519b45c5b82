"""Where a tokenize worker's time goes: seconds per phase and the batches it formed.

Kept by `SnacEncoder` (decode, h2d, encode, d2h) and the tokenize worker (read, build, write);
`benchmarks/bench_tokenize.py` reads them from the JSON lines a worker appends to the file named
by PARLA_TOKENIZE_PROFILE. Nothing here changes what is computed.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

PROFILE_ENV = "PARLA_TOKENIZE_PROFILE"
PHASES = ("read", "decode", "decode_wait", "h2d", "encode", "d2h", "build", "write", "compile",
          "agreement")


@dataclass
class PhaseStats:
    """Seconds per phase (``decode`` is summed over the decode threads; ``decode_wait`` is the
    time the encoder waited on them; ``compile``, torch.compile's first batch, is part of
    ``encode``; ``agreement`` is bf16's float32 reference) and one (clips, audio samples, padded
    samples) per batch."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    batches: list[tuple[int, int, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - start)

    def add(self, phase: str, seconds: float) -> None:
        with self._lock:  # decode threads and the writer add from their own threads
            self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": dict(self.seconds), "batches": [list(b) for b in self.batches]}

    def drain(self) -> dict[str, Any]:
        """What was counted since the last drain, and start again from zero."""
        data = self.to_dict()
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.batches = []
        return data


def append_profile(record: dict[str, Any]) -> None:
    """Append one JSON line to the PARLA_TOKENIZE_PROFILE file, when that is set."""
    path = os.environ.get(PROFILE_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

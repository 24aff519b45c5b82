"""What both engines share: the shape of a worker factory (the protocol is in the package doc)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# worker_factory(rank) builds, once per process or actor, the callable that processes tasks
WorkerFactory = Callable[[int], Callable[[Any], Any]]

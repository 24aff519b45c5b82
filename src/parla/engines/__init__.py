"""Engines run a stage's worker over a stream of tasks, on this machine or on a Ray cluster.

Protocol (both engines):
``map_tasks(tasks, worker_factory, num_workers=..., num_gpus_per_worker=...)``
yields one result per task, in task order. ``worker_factory(rank)`` is called once per worker
process (or Ray actor) to build the object that processes tasks, so a model is loaded once per
worker; ``rank`` picks the GPU (``cuda:{rank % device_count}``). Tasks and results must pickle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..errors import UsageError

WorkerFactory = Callable[[int], Callable[[Any], Any]]


def get_engine(name: str) -> Callable[..., Iterator[Any]]:
    """The `map_tasks` function of an engine by name ("local" or "ray")."""
    if name == "local":
        from .local import map_tasks

        return map_tasks
    if name == "ray":
        from .ray import map_tasks

        return map_tasks
    raise UsageError(f"unknown engine {name!r}; choose local or ray")

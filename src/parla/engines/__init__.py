"""Engines run a stage's worker over a stream of tasks, on this machine or on a Ray cluster.

Protocol (both engines):
``map_tasks(tasks, worker_factory, num_workers=..., num_gpus_per_worker=...)`` yields
``(task, result)`` pairs as tasks finish, in any order: a task is one output shard, the worker
writes it, and the result is the shard's small record, so the caller keys results by task and
never depends on scheduling. ``worker_factory(rank)`` is called once per worker process (or Ray
actor) to build the object that processes tasks, so a model is loaded once per worker; ``rank``
picks the GPU (``cuda:{rank % device_count}``). Tasks and results must pickle.

Workers never outlive the run: they die with the main process however it ends (a signal, an
exception, ``kill -9``), and a rerun resumes from the finished shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from parla.errors import UsageError


def get_engine(name: str) -> Callable[..., Iterator[tuple[Any, Any]]]:
    """The `map_tasks` function of an engine by name ("local" or "ray")."""
    if name == "local":
        from parla.engines.local import map_tasks

        return map_tasks
    if name == "ray":
        from parla.engines.ray import map_tasks

        return map_tasks
    raise UsageError(f"unknown engine {name!r}; choose local or ray")

"""Ray engine: the same `map_tasks` protocol on a Ray cluster, one actor per worker.

Each actor builds its worker once (``worker_factory(rank)``; with GPUs Ray gives each actor its
own and sets CUDA_VISIBLE_DEVICES, so the factory is called with rank 0 and ``cuda:0`` is that
GPU). A task is one output shard written atomically, so running it again is harmless: an actor
that dies is restarted and its task retried, and the run ends as an uninterrupted one would.
Paths in tasks must be visible to every node (a shared filesystem), as they are for local runs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator
from typing import Any

from parla.engines.base import WorkerFactory
from parla.errors import EnvironmentFailure, UsageError, WorkerDied

MAX_RETRIES = 3  # restarts of a dead actor, and retries of the task it was running


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("the ray engine needs Ray: pip install 'parla[ray]'") from None
    return ray


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds on a head that is not there: Ray itself retries for minutes."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise EnvironmentFailure(f"cannot connect to the Ray cluster at {address} "
                                 f"({error.strerror or error}); check RAY_ADDRESS and that the "
                                 "head node is running") from None


def connect() -> Any:
    """The ray module, connected to ``RAY_ADDRESS`` when set, else to a local instance."""
    ray = _import_ray()
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or None
        if address:
            _check_reachable(address)
        try:
            # log_to_driver: what the workers log reaches this process's log
            ray.init(address=address, include_dashboard=False, log_to_driver=True,
                     ignore_reinit_error=True, logging_level="WARNING")
        except (ConnectionError, TimeoutError, RuntimeError) as error:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise EnvironmentFailure(f"cannot connect to {where} ({type(error).__name__}: "
                                     f"{first[:200]}); check RAY_ADDRESS and that the head "
                                     "node is running") from None
    return ray


def cluster_gpus() -> int:
    """GPUs in the whole cluster (not only on this machine)."""
    return int(connect().cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    """CPUs in the whole cluster (not only on this machine)."""
    return max(1, int(connect().cluster_resources().get("CPU", 1)))


class _TaskRunner:
    """The actor body: holds one worker for the actor's lifetime."""

    def __init__(self, worker_factory: WorkerFactory, rank: int) -> None:
        # a worker that cannot be built (a missing package, a model that will not load) says
        # why through its first task: Ray would report a failed actor start as a dead worker
        self.worker, self.build_error = None, None
        try:
            self.worker = worker_factory(rank)
        except Exception as error:
            self.build_error = error

    def run(self, index: int, task: Any) -> tuple[int, Any]:
        if self.build_error is not None:
            raise self.build_error
        return index, self.worker(task)


def map_tasks(tasks: Iterable[Any], worker_factory: WorkerFactory, *, num_workers: int = 1,
              num_gpus_per_worker: float = 0, max_in_flight: int | None = None,
              describe_task: Any = repr) -> Iterator[tuple[Any, Any]]:
    """Run every task on a pool of Ray actors; yield ``(task, result)`` as they finish.

    Each actor has at most ``max_in_flight / actors`` tasks queued (bounded: the plan is never
    all submitted at once). A worker that raises fails the run at once, its task named: Ray
    retries a dead actor's task, never an exception, which would come back every time.
    """
    ray = connect()
    runner = ray.remote(num_cpus=1, num_gpus=num_gpus_per_worker, max_restarts=MAX_RETRIES,
                        max_task_retries=MAX_RETRIES)(_TaskRunner)
    actors = [runner.remote(worker_factory, 0 if num_gpus_per_worker else rank)
              for rank in range(max(num_workers, 1))]
    per_actor = max(1, (max_in_flight or 2 * len(actors)) // len(actors))
    load = dict.fromkeys(range(len(actors)), 0)
    pending: dict[Any, tuple[int, Any]] = {}  # future -> (actor number, task)
    feed = iter(tasks)
    task: Any = None
    try:
        while True:
            for number in sorted(load, key=load.get):  # the least loaded actor first
                if load[number] >= per_actor:
                    break
                task = next(feed, _END)
                if task is _END:
                    break
                pending[actors[number].run.remote(len(pending), task)] = (number, task)
                load[number] += 1
            if not pending:
                return
            [future], _ = ray.wait(list(pending), num_returns=1)
            number, task = pending.pop(future)
            load[number] -= 1
            yield task, _result(ray, future, task, describe_task)
    except ray.exceptions.RayActorError as error:
        lost = [task] + [other for _, other in pending.values()]  # the one it was running first
        unfinished = ", ".join(describe_task(one) for one in lost[:3])
        raise WorkerDied(f"a Ray worker died {MAX_RETRIES + 1} times; unfinished: "
                         f"{unfinished}; finished output is kept, rerun "
                         "to resume") from error
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


_END = object()


def _result(ray: Any, future: Any, task: Any, describe_task: Any) -> Any:
    """The task's record; the worker's own error, its task named, when it raised."""
    try:
        return ray.get(future)[1]
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if not isinstance(cause, BaseException):
            raise
        cause.add_note(f"while processing {describe_task(task)}")
        raise cause from None

"""Ray engine: the same `map_tasks` protocol on a Ray cluster, one actor per worker.

Each actor builds its worker once (``worker_factory(0)``: Ray assigns each actor its own GPU and
sets CUDA_VISIBLE_DEVICES, so ``cuda:0`` inside an actor is that GPU). Resources are declared here,
at the call: one CPU per actor and ``num_gpus_per_worker`` GPUs. Results come back in task order.
Paths in tasks must be visible to every node (a shared filesystem), as they are for local runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import UsageError
from . import WorkerFactory
from .local import WorkerDied


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("the ray engine needs Ray: pip install 'parla[ray]'") from None
    return ray


class _TaskRunner:
    """The actor body: holds one worker for the actor's lifetime."""

    def __init__(self, worker_factory: WorkerFactory, rank: int) -> None:
        self.worker = worker_factory(rank)

    def run(self, task: Any) -> Any:
        return self.worker(task)


def map_tasks(tasks: Iterable[Any], worker_factory: WorkerFactory, *, num_workers: int = 1,
              num_gpus_per_worker: float = 0, max_in_flight: int | None = None,
              describe_task: Any = repr, **_: Any) -> Iterator[Any]:
    """Run every task on a pool of Ray actors; yield results in task order.

    Connects to ``RAY_ADDRESS`` when set, else starts a local Ray instance.
    """
    ray = _import_ray()
    from ray.util import ActorPool

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    runner = ray.remote(num_cpus=1, num_gpus=num_gpus_per_worker)(_TaskRunner)
    actors = [runner.remote(worker_factory, 0 if num_gpus_per_worker else rank)
              for rank in range(max(num_workers, 1))]
    pool = ActorPool(actors)
    in_flight_limit = max_in_flight or 2 * len(actors)
    submitted: list[Any] = []  # tasks not yet answered, oldest first (to name a failed one)
    try:
        for task in tasks:  # bounded in flight: ActorPool.map would queue every task at once
            pool.submit(lambda actor, item: actor.run.remote(item), task)
            submitted.append(task)
            if len(submitted) >= in_flight_limit:
                yield pool.get_next()
                submitted.pop(0)
        while pool.has_next():
            yield pool.get_next()
            submitted.pop(0)
    except ray.exceptions.RayActorError as error:
        raise WorkerDied(f"a Ray worker died while processing {describe_task(submitted[0])}; "
                         "finished output is kept, rerun to resume") from error
    finally:
        for actor in actors:
            ray.kill(actor)

"""Local engine: a pool of spawned worker processes, each building its worker once.

Results come back in task order with a bounded number of tasks in flight, so memory stays flat
however long the stream, and output order (hence bytes) does not depend on scheduling.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import ParlaError
from . import WorkerFactory

_worker: Any = None  # the per-process worker, built once by the pool initializer
_build_error: BaseException | None = None  # why it could not be built


def _init_worker(worker_factory: WorkerFactory, ranks: Any) -> None:
    global _worker, _build_error
    try:
        _worker = worker_factory(ranks.get())
    except Exception as error:  # raised from each task instead: an initializer that raises
        _build_error = error  # only breaks the pool, and the reason would be lost


def _call_worker(task: Any) -> Any:
    if _build_error is not None:
        raise _build_error
    return _worker(task)


class WorkerDied(ParlaError):
    """A worker process died (killed, out of memory, crashed in native code)."""


def map_tasks(tasks: Iterable[Any], worker_factory: WorkerFactory, *, num_workers: int = 1,
              max_in_flight: int | None = None, start_method: str = "spawn",
              num_gpus_per_worker: float = 0, describe_task: Any = repr) -> Iterator[Any]:
    """Run ``worker_factory(rank)(task)`` for every task; yield results in task order.

    With one worker everything runs in this process (no pickling, easy to debug). Several workers
    are spawned processes (safe with CUDA and threads). ``describe_task`` names a task in the
    error raised when a worker process dies.
    """
    del num_gpus_per_worker  # local workers pick their GPU from the rank
    if num_workers <= 1:
        worker = worker_factory(0)
        for task in tasks:
            yield worker(task)
        return

    context = mp.get_context(start_method)
    ranks = context.Queue()  # handed over at process start (initargs), so no manager is needed
    for rank in range(num_workers):
        ranks.put(rank)
    in_flight_limit = max_in_flight or 2 * num_workers
    pending: deque[tuple[Any, Future]] = deque()
    with ProcessPoolExecutor(num_workers, mp_context=context, initializer=_init_worker,
                             initargs=(worker_factory, ranks)) as pool:
        try:
            for task in tasks:
                pending.append((task, pool.submit(_call_worker, task)))
                if len(pending) >= in_flight_limit:
                    yield _result(*pending.popleft(), describe_task)
            while pending:
                yield _result(*pending.popleft(), describe_task)
        finally:
            for _, future in pending:
                future.cancel()


def _result(task: Any, future: Future, describe_task: Any) -> Any:
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise WorkerDied(f"a worker process died while processing {describe_task(task)}; "
                         "finished output is kept, rerun to resume") from error

"""Local engine: spawned worker processes, each building its worker once, one task at a time.

Each worker has its own pipe and gets its next task only when it has answered the last one, so
neither side can block the other and memory stays flat however long the stream. Workers die
with the main process: they ask the kernel for SIGKILL when their parent dies (Linux) and check
their parent as they start; SIGINT is left to the main process, which stops them itself, all
of them even when a signal interrupts the stopping. A worker whose pipe closes, or that gets a
signal while the stage stops, exits quietly: only a failure of its own is reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from parla.engines.base import WorkerFactory
from parla.errors import WorkerDied

_PR_SET_PDEATHSIG = 1
_STOP_SECONDS = 5.0  # how long a worker may take to exit before it is killed


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)


# what a worker meets when the main process is going away: its pipe closed (EOF, a broken
# pipe), or a signal while the stage stops; none of them is a failure of the worker
_PARENT_GONE = (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt, SystemExit)


def _worker_main(worker_factory: WorkerFactory, rank: int, conn: Connection,
                 parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides what Ctrl-C ends
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        _serve(worker_factory, rank, conn)
    except _PARENT_GONE:  # the stage is stopping: exit quietly, no traceback
        sys.exit(0)


def _serve(worker_factory: WorkerFactory, rank: int, conn: Connection) -> None:
    """Build the worker, then answer tasks until told to stop. A failure of the worker or of a
    task is sent to the main process (the reason must reach the user); only talking to the
    main process raises."""
    try:
        worker = worker_factory(rank)
    except BaseException as error:
        conn.send(("error", _picklable(error)))
        return
    conn.send(("ready", None))
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            result = worker(task)
        except BaseException as error:
            conn.send(("error", _picklable(error)))
            return
        conn.send(("result", result))


def _picklable(error: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _bootstrap_hint() -> str:
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if script and not os.path.isfile(script):  # `python - <<EOF`, a notebook's odd main
        return (f"; workers are spawned and import the main script again, which {script} "
                "cannot be: save the code to a file, with the call under "
                "`if __name__ == \"__main__\":`, or use one worker")
    if script and "parla" not in os.path.basename(os.path.dirname(os.path.abspath(script))):
        return (f"; if {os.path.basename(script)} calls parla at its top level, put the call "
                "under `if __name__ == \"__main__\":` (workers are spawned, and each one "
                "imports the main script again)")
    return ""


class _Worker:
    def __init__(self, context: Any, worker_factory: WorkerFactory, rank: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, name=f"parla-worker-{rank}",
                                       args=(worker_factory, rank, child, os.getpid()),
                                       daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.task: Any = None  # the task it is working on
        self.busy = False
        self.dead = False  # found dead between tasks
        self.asked = False  # told to exit

    @property
    def idle(self) -> bool:
        """Started and waiting for a task."""
        return self.ready and not self.busy

    def send(self, task: Any) -> bool:
        """Hand over a task; False (the worker marked dead) when it is no longer there."""
        if self.process.is_alive():
            try:
                self.conn.send(task)
                self.task, self.busy = task, True
                return True
            except OSError:  # it died just now
                pass
        self.dead = True
        return False

    def ask_to_stop(self) -> None:
        """Tell an idle worker to exit (a busy or starting one is terminated by `stop`)."""
        with contextlib.suppress(OSError, ValueError):
            if self.process.is_alive() and self.idle:
                self.conn.send(None)
                self.asked = True

    def stop(self, patient: bool = True) -> None:
        """Make sure the process has ended: it may take a while to exit when asked to (unless
        not `patient`), then it is terminated, then killed."""
        self.process.join(_STOP_SECONDS if patient and self.asked else 0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(_STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _stop_all(workers: list[_Worker]) -> None:
    """Stop every worker, even when a signal arrives while they stop: one left running would
    outlive this process's clean-up, find its pipe closed, and be killed mid-way."""
    for worker in workers:  # all asked first, so that they exit side by side
        worker.ask_to_stop()
    try:
        for worker in workers:
            worker.stop()
    except BaseException:
        for worker in workers:
            worker.stop(patient=False)
        raise


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Start workers with SIGINT and SIGTERM held back, then act on any that came meanwhile.

    A signal must not interrupt `Process.start` halfway (the child would read half its start-up
    data and die with a traceback). The workers inherit the blocked SIGINT, so a Ctrl-C to the
    whole process group during their start-up reaches only this process, which stops them. In
    this process the handlers are deferred too: another thread can take a signal the main
    thread blocks, and Python would still run the handler in the main thread.
    """
    held = (signal.SIGINT, signal.SIGTERM)
    main = threading.current_thread() is threading.main_thread()
    if os.name == "posix":
        # started first: starting it later unblocks SIGINT in this thread as a side effect
        # (multiprocessing restores the mask with SIG_UNBLOCK), and the workers started after
        # it would inherit that
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    arrived: list[int] = []
    handlers = {}
    if main:
        for signum in held:
            handlers[signum] = signal.signal(signum, lambda number, _: arrived.append(number))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(arrived):  # now the run's own handlers act on them
            signal.raise_signal(signum)


def map_tasks(tasks: Iterable[Any], worker_factory: WorkerFactory, *, num_workers: int = 1,
              start_method: str = "spawn", num_gpus_per_worker: float = 0,
              describe_task: Any = repr) -> Iterator[tuple[Any, Any]]:
    """Run ``worker_factory(rank)(task)`` for every task; yield ``(task, result)`` as they finish.

    With one worker everything runs in this process (no pickling, easy to debug). Several workers
    are spawned processes (safe with CUDA and threads). ``describe_task`` names a task in the
    error raised when a worker process dies.
    """
    del num_gpus_per_worker  # local workers pick their GPU from the rank
    if num_workers <= 1:
        worker = worker_factory(0)
        for task in tasks:
            yield task, worker(task)
        return

    context = mp.get_context(start_method)
    workers: list[_Worker] = []
    try:
        with _signals_held():
            for rank in range(num_workers):
                workers.append(_Worker(context, worker_factory, rank))
        yield from _keep_busy(workers, _Feed(iter(tasks)), describe_task)
    finally:
        _stop_all(workers)


class _Feed:
    """The tasks still to hand out: the stream, and any taken for a worker found dead."""

    def __init__(self, pending: Iterator[Any]) -> None:
        self.pending, self.exhausted, self.backlog = pending, False, []

    @property
    def empty(self) -> bool:
        return self.exhausted and not self.backlog

    def dispatch(self, workers: list[_Worker]) -> None:
        """One task to every idle live worker, while tasks are left."""
        for worker in workers:
            if not worker.idle or worker.dead or self.empty:
                continue
            task = self.backlog.pop() if self.backlog else next(self.pending, _END)
            if task is _END:
                self.exhausted = True
            elif not worker.send(task):  # died between tasks: nothing lost
                self.backlog.append(task)


def _keep_busy(workers: list[_Worker], feed: _Feed,
               describe_task: Any) -> Iterator[tuple[Any, Any]]:
    """Keep every worker busy with one task and yield each answer, until no task is left."""
    while True:
        feed.dispatch(workers)
        live = [w for w in workers if not w.idle and not w.dead]
        if not live:
            if feed.empty:
                return
            if all(w.dead for w in workers):
                raise WorkerDied("every worker process died between tasks; finished "
                                 "output is kept, rerun to resume")
            continue
        yield from _answers(live, describe_task)


def _answers(live: list[_Worker], describe_task: Any) -> Iterator[tuple[Any, Any]]:
    """Wait for the busy workers and yield the tasks they finished (a death raises)."""
    by_handle = {}
    for worker in live:
        by_handle[worker.conn] = worker
        by_handle[worker.process.sentinel] = worker
    for handle in wait(list(by_handle)):
        worker = by_handle[handle]
        if worker.idle:
            continue  # answered already in this round; a death now loses no task
        message = _receive(worker)
        if message is None:
            raise _died(worker, describe_task)
        kind, payload = message
        if kind == "error":  # raised once, with its task named: not retried
            if worker.task is not None:
                payload.add_note(f"while processing {describe_task(worker.task)}")
            raise payload
        if kind == "ready":
            worker.ready = True
        else:
            task, worker.task, worker.busy = worker.task, None, False
            yield task, payload


_END = object()


def _receive(worker: _Worker) -> tuple[str, Any] | None:
    """The worker's next message, or None when it died without one."""
    try:
        if worker.conn.poll():
            return worker.conn.recv()
    except (EOFError, OSError):
        pass
    return None


def _died(worker: _Worker, describe_task: Any) -> WorkerDied:
    worker.process.join(1)
    code = worker.process.exitcode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else \
        f"exited with code {code}"
    if not worker.ready:
        return WorkerDied(f"a worker process {how} while starting{_bootstrap_hint()}")
    return WorkerDied(f"a worker process {how} while processing {describe_task(worker.task)}; "
                      "finished output is kept, rerun to resume")

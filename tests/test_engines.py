"""Both engines: every task answered once with its own result, one worker per process, a dead
worker reported, a dead Ray actor retried."""

from __future__ import annotations

import functools
import os

import pytest

from parla.engines import get_engine
from parla.engines.local import map_tasks
from parla.errors import UsageError, WorkerDied


class Doubler:
    """A worker that records which process and rank built it."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.pid = os.getpid()

    def __call__(self, task: int) -> tuple[int, int, int]:
        return task * 2, self.rank, self.pid


class DiesOn:
    def __init__(self, fatal_task: int, rank: int) -> None:
        self.fatal_task = fatal_task

    def __call__(self, task: int) -> int:
        if task == self.fatal_task:
            os._exit(9)  # a native crash or an OOM kill looks like this to the parent
        return task


def test_single_worker_runs_in_process():
    pairs = list(map_tasks(range(5), Doubler, num_workers=1))
    assert [(task, r[0]) for task, r in pairs] == [(i, 2 * i) for i in range(5)]
    assert {r[2] for _, r in pairs} == {os.getpid()}


def test_two_workers_answer_every_task_once_and_build_each_worker_once():
    pairs = list(map_tasks(range(40), Doubler, num_workers=2))
    assert sorted(task for task, _ in pairs) == list(range(40))
    assert all(result[0] == 2 * task for task, result in pairs)  # each result with its task
    results = [result for _, result in pairs]
    ranks_by_pid = {}
    for _, rank, pid in results:
        ranks_by_pid.setdefault(pid, set()).add(rank)
    assert os.getpid() not in ranks_by_pid
    assert all(len(ranks) == 1 for ranks in ranks_by_pid.values())  # built once per process
    assert set().union(*ranks_by_pid.values()) <= {0, 1}


def test_dead_worker_is_reported_with_its_task():
    with pytest.raises(WorkerDied, match="task-3"):
        list(map_tasks(range(6), functools.partial(DiesOn, 3), num_workers=2,
                       describe_task=lambda task: f"task-{task}"))


def test_unknown_engine_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown engine"):
        get_engine("spark")


@pytest.mark.ray
def test_ray_engine_matches_local():
    pytest.importorskip("ray")
    import ray

    try:
        # workers must import this test module to unpickle the worker class
        tests_dir = os.path.dirname(__file__)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": tests_dir}})
        ray_results = sorted((task, r[0]) for task, r in get_engine("ray")(
            range(12), Doubler, num_workers=2, max_in_flight=3))
    finally:
        ray.shutdown()
    assert ray_results == [(task, r[0]) for task, r in map_tasks(range(12), Doubler,
                                                                 num_workers=1)]


class DiesOnceOn:
    """Kills its own process the first time it meets ``fatal_task`` (a marker file remembers),
    as the OOM killer or a lost node would; the retried task then succeeds."""

    def __init__(self, fatal_task: int, marker: str, rank: int) -> None:
        self.fatal_task, self.marker = fatal_task, marker

    def __call__(self, task: int) -> int:
        if task == self.fatal_task and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(9)
        return task * 2


@pytest.mark.ray
def test_a_killed_ray_worker_has_its_task_retried(tmp_path):
    pytest.importorskip("ray")
    import ray

    marker = tmp_path / "killed-once"
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.path.dirname(__file__)}})
        pairs = list(get_engine("ray")(range(8), functools.partial(DiesOnceOn, 5, str(marker)),
                                       num_workers=2))
    finally:
        ray.shutdown()
    assert marker.exists()  # the worker really died
    assert sorted(pairs) == [(i, 2 * i) for i in range(8)]


class CannotBuild:
    def __init__(self, rank: int) -> None:
        raise UsageError("--vad silero needs the silero-vad package")


def test_a_worker_that_cannot_be_built_reports_why():
    with pytest.raises(UsageError, match="silero-vad"):
        list(map_tasks(range(4), CannotBuild, num_workers=2))
    with pytest.raises(UsageError, match="silero-vad"):
        list(map_tasks(range(4), CannotBuild, num_workers=1))


@pytest.mark.ray
def test_a_ray_worker_that_cannot_be_built_reports_why():
    pytest.importorskip("ray")
    import ray

    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.path.dirname(__file__)}})
        with pytest.raises(UsageError, match="silero-vad"):
            list(get_engine("ray")(range(4), CannotBuild, num_workers=2))
    finally:
        ray.shutdown()


class DiesAfterAnswering:
    """Answers task 0, then kills itself while idle (as the OOM killer might)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __call__(self, task: int) -> int:
        if task == 0:
            import threading

            threading.Timer(0.3, os._exit, (9,)).start()
        return task


def test_a_worker_that_dies_between_tasks_loses_nothing():
    import time

    def tasks():
        yield 0
        time.sleep(1.0)  # no task for anyone while the worker of task 0 dies
        yield from range(1, 10)

    results = sorted(task for task, _ in map_tasks(tasks(), DiesAfterAnswering, num_workers=2))
    assert results == list(range(10))


class Raises:
    def __init__(self, rank: int) -> None:
        pass

    def __call__(self, task: int) -> int:
        raise ValueError(f"task {task} is bad")


def _spawn_worker(factory):
    import multiprocessing as mp

    from parla.engines.local import _worker_main

    context = mp.get_context("spawn")
    conn, child = context.Pipe()
    process = context.Process(target=_worker_main, args=(factory, 0, child, os.getpid()))
    process.start()
    child.close()
    assert conn.recv() == ("ready", None)
    return conn, process


@pytest.mark.parametrize("when", ["idle", "busy"])
def test_a_worker_whose_main_process_goes_away_exits_quietly(when, capfd):
    import time

    conn, process = _spawn_worker(Slow if when == "busy" else Doubler)
    if when == "busy":
        conn.send(1)  # its answer meets a closed pipe
        time.sleep(0.2)
    conn.close()  # what the worker sees when the main process exits before stopping it
    process.join(30)
    assert process.exitcode == 0
    assert "Traceback" not in capfd.readouterr().err


class Slow:
    def __init__(self, rank: int) -> None:
        pass

    def __call__(self, task: int) -> int:
        import time

        time.sleep(1.0)
        return task


def test_a_failing_task_is_still_reported_by_the_worker():
    conn, process = _spawn_worker(Raises)
    conn.send(3)
    kind, error = conn.recv()
    assert kind == "error" and isinstance(error, ValueError) and str(error) == "task 3 is bad"
    process.join(30)
    conn.close()
    with pytest.raises(ValueError, match="is bad"):
        list(map_tasks(range(4), Raises, num_workers=2))


def test_a_signal_while_the_workers_stop_still_stops_every_one(monkeypatch, capfd):
    from parla.engines import local

    real_stop = local._Worker.stop
    seen = []

    def interrupted(worker, patient=True):
        seen.append(worker.process)
        if len(seen) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the first worker exits
        real_stop(worker, patient)

    monkeypatch.setattr(local._Worker, "stop", interrupted)
    with pytest.raises(KeyboardInterrupt):
        list(map_tasks(range(6), Doubler, num_workers=2))
    processes = set(seen)
    assert len(processes) == 2 and not any(p.is_alive() for p in processes)
    assert "Traceback" not in capfd.readouterr().err


class RaisesOn:
    """Raises on one task, every time it is given it (a bad input, not a dead process); counts
    its calls of that task in a file, so a retry would show."""

    def __init__(self, bad_task: int, counter: str, rank: int) -> None:
        self.bad_task, self.counter = bad_task, counter

    def __call__(self, task: int) -> int:
        if task == self.bad_task:
            with open(self.counter, "a") as handle:
                handle.write("x")
            raise ValueError("cannot take this input")
        return task


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_a_task_that_raises_is_reported_once_with_its_task_not_retried(engine, tmp_path):
    counter = tmp_path / "calls"
    factory = functools.partial(RaisesOn, 5, str(counter))
    if engine == "ray":
        pytest.importorskip("ray")
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.path.dirname(__file__)}})
    try:
        with pytest.raises(ValueError, match="cannot take this input") as error:
            list(get_engine(engine)(range(8), factory, num_workers=2,
                                    describe_task=lambda task: f"shard {task}"))
    finally:
        if engine == "ray":
            ray.shutdown()
    assert error.value.__notes__ == ["while processing shard 5"]
    assert counter.read_text() == "x"  # once: an exception is not retried

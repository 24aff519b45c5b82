"""The one shard-stage runner: prepare, tokenize and packing each plan tasks, and this runs them.

A task is one output shard. The runner trusts every shard already on disk whose footer record
matches the run by one rule (`mismatch`), maps the other tasks over an engine (each worker
writes its shard atomically and returns its record), and gives back every task's record in plan
order, so that the stage rebuilds its reports from the footers alone: a resumed run and an
uninterrupted one write the same bytes, with no state file.

The rule: a shard is finished for this run when its footer holds a record of this stage, that
record's ``settings`` equal the run's settings, and it records the very inputs its task plans
(`ShardTask.inputs`). Anything else in the scanned configs (another run's shard, one this plan
does not have, a foreign file) is refused with one line, or removed and redone where the stage
derives its shards from others in the same folder (packing).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from parla.engines import get_engine
from parla.errors import UsageError, WorkerDied
from parla.progress import get_logger, progress
from parla.store.shards import read_shard_record, settings_difference
from parla.store.urls import (
    as_path,
    current_storage_options,
    forget_listings,
    use_storage_options,
)

log = get_logger("runner")


class ShardTask(Protocol):
    """What the runner needs of a stage's task; the task itself must pickle."""

    @property
    def output(self) -> str:
        """The shard's path."""

    @property
    def rows(self) -> int:
        """Rows it is planned to hold (for the progress bar)."""

    def inputs(self) -> dict[str, Any]:
        """What its footer record says about the inputs it was made from."""

    def describe(self) -> str:
        """The task in a message: ``shard central/train-00000-of-00002.parquet``."""


@dataclass(frozen=True)
class ShardStage:
    """One stage's run into one output folder."""

    name: str  # the key of its footer records (store.layout.*_STAGE)
    out: Path
    settings: Mapping[str, Any]  # what every shard's record holds under "settings"
    required: tuple[str, ...] = ()  # keys a finished record must have besides settings
    redo_mismatched: bool = False  # remove and rewrite a shard that does not match, not refuse
    progress_bar: bool = True


@dataclass(frozen=True)
class ShardGroup:
    """Consecutive tasks handed to one worker call, for a stage that batches across shards; the
    worker returns one record per task, in order, each shard still written on its own."""

    tasks: tuple[Any, ...]

    @property
    def output(self) -> str:
        return self.tasks[0].output

    @property
    def rows(self) -> int:
        return sum(task.rows for task in self.tasks)

    def describe(self) -> str:
        more = f" and {len(self.tasks) - 1} more" if len(self.tasks) > 1 else ""
        return self.tasks[0].describe() + more


def group_tasks(tasks: Sequence[ShardTask], max_rows: int, num_workers: int) -> list[ShardGroup]:
    """Tasks in plan order cut into groups of at most ``max_rows`` rows (a task bigger than that
    is a group of its own; an empty one joins the group before it), and small enough that every
    worker gets one where there are enough."""
    total = sum(task.rows for task in tasks)
    limit = max(1, min(max_rows, -(-total // max(1, num_workers))))
    groups: list[list[ShardTask]] = []
    for task in tasks:
        if not groups or (task.rows and sum(t.rows for t in groups[-1]) + task.rows > limit):
            groups.append([])
        groups[-1].append(task)
    return [ShardGroup(tuple(group)) for group in groups]


def mismatch(record: Mapping[str, Any] | None, task: ShardTask | None,
             stage: ShardStage) -> str | None:
    """Why a shard on disk is not this task's finished output, or None when it is."""
    if record is None or any(key not in record for key in stage.required):
        return "which parla did not write"
    if not isinstance(record.get("settings"), Mapping):
        return "written by an older parla whose settings this one cannot compare"
    differ = settings_difference(record["settings"], stage.settings)
    if differ:
        return f"a run with other settings ({differ})"
    if task is None:
        return "a shard that this run's input does not have"
    if any(record.get(key) != value for key, value in task.inputs().items()):
        return (f"made from another version of the inputs of this run's {task.describe()} "
                "(changed since it was written)")
    return None


def trusted_records(stage: ShardStage, tasks: Sequence[ShardTask],
                    found: Iterable[Path]) -> dict[str, dict]:
    """The records of the shards in ``found`` that this run can keep, by output path."""
    planned = {task.output: task for task in tasks}
    done: dict[str, dict] = {}
    for path in found:
        task = planned.get(str(path))
        record = read_shard_record(path, stage.name)
        problem = mismatch(record, task, stage)
        if problem is None and task is not None and record is not None:
            done[task.output] = record
        elif stage.redo_mismatched:
            log.info("redoing %s (%s)", path.relative_to(stage.out), problem)
            path.unlink()
        else:
            raise UsageError(f"--output_dir {stage.out} holds {path.relative_to(stage.out)}, "
                             f"{problem}; pass --overwrite to replace it, or choose another "
                             "output folder")
    return done


def run_shards(stage: ShardStage, tasks: Sequence[ShardTask], found: Iterable[Path],
               worker_factory: Callable[[int], Callable[[Any], dict]], **engine: Any
               ) -> list[dict]:
    """Every task's record, in plan order: trusted from disk, or made now by the workers
    (``engine``: `run_todo`'s engine keywords)."""
    return run_todo(stage, tasks, trusted_records(stage, tasks, found), worker_factory,
                    **engine)


def run_todo(stage: ShardStage, tasks: Sequence[ShardTask], done: dict[str, dict],
             worker_factory: Callable[[int], Callable[[Any], dict]], *, engine: str = "local",
             num_workers: int = 1, num_gpus_per_worker: float = 0, unit: str = "rows",
             group_rows: int | None = None) -> list[dict]:
    """Every task's record, in plan order: ``done`` (`trusted_records`), the others made now.

    With ``group_rows`` the workers get `ShardGroup`s of up to that many rows and answer each
    with the list of its tasks' records.
    """
    todo = [task for task in tasks if task.output not in done]
    if done:
        log.info("resuming %s: %d of %d shards already written", stage.out, len(done),
                 len(tasks))
    if not todo:
        return [done[task.output] for task in tasks]
    bar = progress(desc=stage.name, total=sum(t.rows for t in tasks), unit=unit,
                   initial=sum(t.rows for t in tasks if t.output in done),
                   disable=not stage.progress_bar)
    try:
        if group_rows:
            todo = group_tasks(todo, group_rows, num_workers)
        done = done | _map(todo, worker_factory, engine, num_workers, num_gpus_per_worker, bar)
    finally:
        bar.close()
        forget_listings(stage.out)  # the workers wrote there: the reports must see it
    return [done[task.output] for task in tasks]


def _map(todo: list[ShardTask], worker_factory: Callable[[int], Callable[[Any], dict]],
         engine: str, num_workers: int, num_gpus_per_worker: float, bar: Any) -> dict[str, dict]:
    done: dict[str, dict] = {}
    map_tasks = get_engine(engine)
    # the workers reach the store as the driver does (they run in other processes or nodes)
    worker_factory = functools.partial(_with_storage, worker_factory, current_storage_options())
    try:
        for task, record in map_tasks(todo, worker_factory,
                                      num_workers=max(1, min(num_workers, len(todo))),
                                      num_gpus_per_worker=num_gpus_per_worker,
                                      describe_task=type(todo[0]).describe):
            for one, one_record in (zip(task.tasks, record, strict=True)
                                    if isinstance(task, ShardGroup) else [(task, record)]):
                done[one.output] = one_record
            bar.update(task.rows)
    except WorkerDied as error:
        # the engine names the task it lost; the shards still missing are the sure list
        tasks = [one for task in todo
                 for one in (task.tasks if isinstance(task, ShardGroup) else [task])]
        unfinished = [task.describe() for task in tasks if not as_path(task.output).is_file()]
        more = f" and {len(unfinished) - 3} more" if len(unfinished) > 3 else ""
        raise WorkerDied(f"{error}. Unfinished: {'; '.join(unfinished[:3])}{more}") from error
    return done


def _with_storage(worker_factory: Callable[[int], Callable[[Any], dict]],
                  storage_options: dict[str, Any], rank: int) -> Callable[[Any], dict]:
    use_storage_options(storage_options)
    return worker_factory(rank)

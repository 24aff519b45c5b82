#!/usr/bin/env python3
"""parla's Ray actor pool against Ray Data's streaming `map_batches`, side by side in one run.

Issue #19 asks whether Ray Data should run parla's stages on a cluster. This drives the real
prepare stage (bench_prepare.py's generated release, defaults otherwise) through two engines
on one local Ray instance with the same worker count, each variant in a fresh subprocess,
interleaved over ``--repeats`` rounds:

  ray        parla's engine (`parla.engines.ray`): an actor per worker, each building its worker
             once, at most two tasks queued per actor, one shard per task
  ray-data   the same tasks and the same worker factory through Ray Data:
             ``from_items(tasks).map_batches(<actor class>, concurrency=W, batch_size=1)``,
             consumed with ``iter_rows`` as results stream out (this benchmark's own engine: it
             is installed in the child with `parla.engines.get_engine` patched, nothing in
             parla's package uses it)

Both write the same shards; the run checks that the two outputs are byte-identical (every
file's SHA-256), then reports rows/s (median; input rows over the stage's wall seconds) and
the driver's peak RSS.

Usage:
    python benchmarks/bench_ray_data.py                       # N=500, 2 workers, 3 rounds
    python benchmarks/bench_ray_data.py --n 2000 --repeats 3 --out /tmp/ray-data.md
Needs the ray extra (ray[data] is what Ray Data needs: pandas and pyarrow, which parla has).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare import child_figures, emit, ensure_corpus, machine_description  # noqa: E402

from parla.store.lock import LOCK_FILE  # noqa: E402

VARIANTS = ("ray", "ray-data")
ENV = {"PARLA_DISABLE_PROGRESS": "1", "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled",
       "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONHASHSEED": "0",
       "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}


class _DataRunner:
    """Ray Data's actor: builds parla's worker once, then one task per batch of one row."""

    def __init__(self, worker_factory: Any) -> None:
        self.worker = worker_factory(0)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        records = [pickle.dumps(self.worker(pickle.loads(task))) for task in batch["task"]]
        return {"index": batch["index"], "record": records}


def ray_data_map_tasks(tasks: Iterable[Any], worker_factory: Any, *, num_workers: int = 1,
                       num_gpus_per_worker: float = 0, describe_task: Any = repr,
                       **_: Any) -> Iterator[tuple[Any, Any]]:
    """parla's engine protocol (`parla.engines`) over Ray Data: ``(task, record)`` pairs."""
    import ray

    from parla.engines.ray import connect

    connect()
    tasks = list(tasks)
    items = [{"index": index, "task": pickle.dumps(task)} for index, task in enumerate(tasks)]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _DataRunner, fn_constructor_args=(worker_factory,), batch_size=1,
        concurrency=num_workers, num_cpus=1, num_gpus=num_gpus_per_worker or None)
    for row in dataset.iter_rows():
        yield tasks[int(row["index"])], pickle.loads(row["record"])


def child_main(variant: str, corpus: str, output: str, workers: int, result: Path) -> None:
    """Runs in the measured subprocess: one prepare on a fresh local Ray, its figures."""
    import ray

    import parla.engines
    import parla.stages.runner as runner
    from parla.options import PrepareOptions
    from parla.stages.prepare import prepare

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    if variant == "ray-data":
        real = parla.engines.get_engine
        runner.get_engine = lambda name: ray_data_map_tasks if name == "ray" else real(name)
    options = PrepareOptions(datasets=(corpus,), output_dir=output, num_workers=workers,
                             engine="ray", overwrite=True)
    started = time.perf_counter()
    stats = prepare(options).statistics
    seconds = time.perf_counter() - started
    ray.shutdown()
    result.write_text(json.dumps({
        "seconds": seconds, "rows": stats["total"]["rows"],
        "driver_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def digest(folder: Path) -> dict[str, str]:
    """Every file's SHA-256 but the lock's (it names the process that held it)."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != LOCK_FILE}


def run_variant(variant: str, corpus: Path, work: Path, workers: int) -> dict[str, Any]:
    output = work / f"out-{variant}"
    shutil.rmtree(output, ignore_errors=True)
    result = work / f"{variant}.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, str(corpus),
               str(output), str(workers), str(result)]
    with open(work / f"{variant}.log", "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, **ENV)).returncode
    figures = child_figures(variant, code, result, work / f"{variant}.log")
    rows_in = sum(1 for _ in open(corpus / "validated.tsv", encoding="utf-8")) - 1
    return figures | {"rows_per_s": rows_in / figures["seconds"], "digest": digest(output)}


def report(rounds: dict[str, list[dict[str, Any]]], n: int, workers: int, repeats: int,
           differ: list[str]) -> str:
    base = statistics.median(r["rows_per_s"] for r in rounds["ray"])
    lines = [f"machine: {machine_description()}",
             f"corpus: {n} clips (bench_prepare.py's), prepare, {workers} workers on one local "
             f"Ray, median of {repeats} interleaved rounds", "",
             "| engine | rows/s | vs ray | seconds | driver peak RSS (MiB) | rows written |",
             "|---|---|---|---|---|---|"]
    for variant, runs in rounds.items():
        speed = statistics.median(r["rows_per_s"] for r in runs)
        lines.append(f"| {variant} | {speed:.1f} | {speed / base:.2f}x | "
                     f"{statistics.median(r['seconds'] for r in runs):.1f} | "
                     f"{statistics.median(r['driver_peak_mib'] for r in runs):.0f} | "
                     f"{runs[0]['rows']} |")
    lines += ["", "outputs byte-identical across engines and rounds: "
              + ("yes" if not differ else f"NO ({len(differ)} files differ: "
                 f"{', '.join(differ[:5])})")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="clips in the corpus")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/parla-bench"))
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        variant, corpus, output, workers, result = args.child
        child_main(variant, corpus, output, int(workers), Path(result))
        return 0
    corpus = ensure_corpus(args.cache, args.n, jobs=max(1, (os.cpu_count() or 1)))
    work = Path(tempfile.mkdtemp(prefix="parla-bench-ray-data-"))
    try:
        rounds: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
        for round_number in range(args.repeats):
            for variant in VARIANTS:
                figures = run_variant(variant, corpus, work, args.workers)
                rounds[variant].append(figures)
                print(f"round {round_number + 1} {variant}: {figures['rows_per_s']:.1f} rows/s",
                      file=sys.stderr)
        first = rounds["ray"][0]["digest"]
        differ = sorted({name for runs in rounds.values() for r in runs
                         for name in set(first) | set(r["digest"])
                         if first.get(name) != r["digest"].get(name)})
        text = report(rounds, args.n, args.workers, args.repeats, differ)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

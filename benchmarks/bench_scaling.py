"""How far prepare scales: the driver's CPU per row, one worker's rows/s, 1 vs 2 workers, and the
throughput those measured costs project at 16, 64 and 256 workers.

The corpus is the demo's espeak-ng Catalan clips copied into a Common Voice-format release of
many speakers and seven dialects, so it needs no network and no espeak-ng. Every figure comes
from a run in this process's children: the driver's CPU is what `getrusage` says the driver
(this process, less its workers) spent.

    python benchmarks/bench_scaling.py                      # 7 x 700 clips
    python benchmarks/bench_scaling.py --clips_per_dialect 200 --work /tmp/scaling
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from parla.testing import DIALECT_ACCENTS, write_demo_release

CHILD = """
import json, resource, sys, time
from parla.options import ConditioningOptions, PrepareOptions
from parla.stages.prepare import prepare
release, out, workers, condition = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
rows_per_shard = int(sys.argv[5])
if __name__ == "__main__":
    started = time.perf_counter()
    cond = ConditioningOptions() if condition else ConditioningOptions(condition_audio=False)
    result = prepare(PrepareOptions(datasets=(release,), output_dir=out, num_workers=workers,
                                    max_samples_per_speaker=50, conditioning=cond,
                                    rows_per_shard=rows_per_shard))
    own = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": time.perf_counter() - started,
                      "driver_cpu": own.ru_utime + own.ru_stime,
                      "rows": result.statistics["total"]["rows"]}))
"""


def run_prepare(release: Path, out: Path, workers: int, condition: bool,
                rows_per_shard: int = 256) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = os.environ | {"PARLA_DISABLE_PROGRESS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(release), str(out), str(workers),
                           "1" if condition else "0", str(rows_per_shard)],
                          capture_output=True, text=True, env=env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    shards = list(out.rglob("*.parquet"))
    result |= {"shards": len(shards), "bytes": sum(p.stat().st_size for p in shards)}
    return result


def machine_line() -> str:
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips_per_dialect", type=int, default=700)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: tmp)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="parla-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    dialects = list(DIALECT_ACCENTS)
    small = write_demo_release(work / "cv-2", dialects[:2], args.clips_per_dialect)
    large = write_demo_release(work / "cv-7", dialects, args.clips_per_dialect)

    # the driver's cost: same work per row, 2 vs 7 dialects, conditioning off (it runs in the
    # workers and does not change what the driver does per row)
    two = run_prepare(small, work / "out-2", 2, condition=False)
    seven = run_prepare(large, work / "out-7", 2, condition=False)
    slope_ms = 1000 * (seven["driver_cpu"] - two["driver_cpu"]) / (seven["rows"] - two["rows"])
    # one worker's throughput with the default conditioning, then two workers
    one_worker = run_prepare(small, work / "out-w1", 1, condition=True)
    two_workers = run_prepare(small, work / "out-w2", 2, condition=True)
    # with one worker the driver and the worker share a process: take the driver's cost out
    per_row_s = one_worker["wall"] / one_worker["rows"] - slope_ms / 1000
    worker_rate = 1 / per_row_s
    driver_limit = 1000 / slope_ms if slope_ms > 0 else float("inf")

    print(f"machine: {machine_line()}")
    print(f"corpus: {args.clips_per_dialect} clips per dialect (demo clips, 1.5-6 s)")
    print(f"driver CPU, 2 dialects: {two['driver_cpu']:.2f} s for {two['rows']} rows; "
          f"7 dialects: {seven['driver_cpu']:.2f} s for {seven['rows']} rows")
    print(f"driver CPU per extra row: {slope_ms:.3f} ms (target <= 0.3 ms)")
    print(f"one worker, conditioning on: {worker_rate:.1f} rows/s")
    print(f"1 worker: {one_worker['wall']:.1f} s, 2 workers: {two_workers['wall']:.1f} s for "
          f"{one_worker['rows']} rows ({one_worker['wall'] / two_workers['wall']:.2f}x)")
    print("projected throughput (min of workers x one worker's rate, the driver's limit):")
    print("| workers | rows/s | limited by |\n|---:|---:|---|")
    for workers in (16, 64, 256):
        rate = min(workers * worker_rate, driver_limit)
        limit = "driver" if rate == driver_limit else "workers"
        print(f"| {workers} | {rate:,.0f} | {limit} |")
    print(f"the driver alone could feed {driver_limit:,.0f} rows/s, "
          f"{driver_limit / worker_rate:,.0f} workers")
    # what resume granularity costs: the same run in shards of 256 and of 1000 rows
    print("rows_per_shard, 7 dialects, 1 worker, conditioning off:")
    print("| rows_per_shard | shards | wall s | output MB |\n|---:|---:|---:|---:|")
    for size in (1000, 256):
        run = run_prepare(large, work / f"out-r{size}", 1, condition=False, rows_per_shard=size)
        print(f"| {size} | {run['shards']} | {run['wall']:.1f} | {run['bytes'] / 1e6:.1f} |")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

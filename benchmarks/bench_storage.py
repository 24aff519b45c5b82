#!/usr/bin/env python3
"""prepare to an S3 bucket against prepare to the local disk, side by side in one run.

The same generated Common Voice release (bench_prepare.py's corpus: N clips of about 4 s of
48 kHz MP3 Catalan speech), the same worker count, defaults otherwise; each variant in a fresh
subprocess, interleaved over ``--repeats`` rounds so drift on the machine hits both alike:

  local     --datasets <local release> --output_dir <local folder>
  s3        --datasets <local release> --output_dir s3://<bucket>/out (moto's S3 server, in a
            process of its own, on 127.0.0.1: the cost of the S3 protocol, not of a network)
  s3-both   --datasets s3://<bucket>/cv (the release uploaded first) --output_dir s3://...: the
            workers read every clip from the store too

Two layouts of the machine, side by side in the same run:

  shared    the stage and the S3 server on all cores: moto's Python answers every PUT (an MD5
            of every byte) on the cores the workers need, which a real store does elsewhere
  own-core  the S3 server pinned to the last core, the stage (and its workers) to the others:
            the store works beside the stage, as a real one does on machines of its own (the
            worker count is capped at the stage's cores; one worker runs in the driver)

Reported per layout and variant: rows/s (median of the rounds; input rows over the stage's
wall seconds), the driver's peak RSS (ru_maxrss of the process that runs the stage: the
workers are separate processes), the peak RSS of the whole tree, each figure against local in
the same layout, and the CPU seconds the S3 server itself spent. Also measured once: what the
S3 client stack alone costs a process (importing s3fs, and its session's first call). The
targets (issue #19): s3 at least 0.8x local's rows/s, and a driver peak no higher than local's
(5% slack).

Usage:
    python benchmarks/bench_storage.py                 # N=500, 2 workers, 3 rounds, both layouts
    python benchmarks/bench_storage.py --n 2000 --workers 2 --repeats 3 --out /tmp/storage.md
Needs the s3 extra and moto[server] (both in the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare import (  # noqa: E402
    TreeRssSampler,
    child_figures,
    emit,
    ensure_corpus,
    machine_description,
)

VARIANTS = ("local", "s3", "s3-both")
LAYOUTS = ("shared", "own-core")
BUCKET = "parla-bench"
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
       "AWS_DEFAULT_REGION": "us-east-1", "PARLA_DISABLE_PROGRESS": "1", "OMP_NUM_THREADS": "1",
       "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONHASHSEED": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in a process of its own (its CPU and memory are not the driver's)."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", (
        "import logging, sys, time; logging.disable(logging.INFO); "
        "from moto.server import ThreadedMotoServer; "
        "s = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False); "
        "s.start(); time.sleep(10**9)"), str(port)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, endpoint
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("moto's server did not start") from None
            time.sleep(0.2)


def s3_client(endpoint: str) -> Any:
    import boto3

    os.environ.update(ENV)
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def upload_release(client: Any, corpus: Path, prefix: str) -> None:
    for path in sorted(corpus.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(corpus)}",
                              Body=path.read_bytes())


def clear_prefix(client: Any, prefix: str) -> None:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    keys = [{"Key": item["Key"]} for page in pages for item in page.get("Contents", [])]
    for start in range(0, len(keys), 1000):
        client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys[start:start + 1000]})


def child_main(source: str, output: str, workers: int, endpoint: str, result: Path) -> None:
    """Runs in the measured subprocess: one prepare, its figures as JSON."""
    from parla.options import PrepareOptions
    from parla.stages.prepare import prepare

    options = PrepareOptions(datasets=(source,), output_dir=output, num_workers=workers,
                             overwrite=True, storage_options={"endpoint_url": endpoint})
    started = time.perf_counter()
    stats = prepare(options).statistics
    result.write_text(json.dumps({
        "seconds": time.perf_counter() - started, "rows": stats["total"]["rows"],
        "driver_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` onto ``cpus`` (new threads inherit it)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), cpus)


def layout_cpus(layout: str) -> tuple[set[int], set[int]]:
    """(the stage's cores, the S3 server's cores) of a layout."""
    every = sorted(os.sched_getaffinity(0))
    if layout == "shared" or len(every) < 2:
        return set(every), set(every)
    return set(every[:-1]), {every[-1]}


def run_variant(name: str, corpus: Path, work: Path, workers: int, endpoint: str,
                client: Any, server_pid: int, layout: str = "shared") -> dict[str, Any]:
    stage_cpus, server_cpus = layout_cpus(layout)
    pin(server_pid, server_cpus)
    workers = min(workers, len(stage_cpus))
    source = f"s3://{BUCKET}/cv/{corpus.name}" if name == "s3-both" else str(corpus)
    output = str(work / "local-out") if name == "local" else f"s3://{BUCKET}/out-{name}"
    if name == "local":
        shutil.rmtree(output, ignore_errors=True)
    else:
        clear_prefix(client, f"out-{name}/")
    result = work / f"{name}.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", source, output,
               str(workers), endpoint, str(result)]
    server_before = cpu_seconds(server_pid)
    with open(work / f"{name}.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, **ENV),
                                   preexec_fn=lambda: os.sched_setaffinity(0, stage_cpus))
        sampler = TreeRssSampler(process.pid)
        sampler.start()
        code = process.wait()
        tree_peak = sampler.stop()
    server_cpu = cpu_seconds(server_pid) - server_before
    figures = child_figures(name, code, result, work / f"{name}.log")
    rows_in = sum(1 for _ in open(corpus / "validated.tsv", encoding="utf-8")) - 1
    return figures | {"rows_in": rows_in, "rows_per_s": rows_in / figures["seconds"],
                      "workers": workers,
                      "tree_peak_mib": tree_peak / 2**20, "server_cpu_s": server_cpu,
                      "driver_peak_mib": figures["driver_maxrss_kib"] / 1024}


def summarise(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    return {name: {key: statistics.median(r[key] for r in runs)
                   for key in ("rows_per_s", "seconds", "driver_peak_mib", "tree_peak_mib",
                               "server_cpu_s")}
            | {"rows": runs[0]["rows"], "rows_in": runs[0]["rows_in"],
               "workers": runs[0]["workers"]}
            for name, runs in rounds.items()}


def client_stack_cost(endpoint: str) -> tuple[float, float]:
    """MiB a fresh process grows by importing s3fs, then by its session's first call."""
    code = ("import sys, pandas, pyarrow.parquet\n"
            "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
            "base = rss(); import s3fs; imported = rss()\n"
            "s3fs.S3FileSystem(client_kwargs={'endpoint_url': sys.argv[1]}).ls('')\n"
            "print(imported - base, rss() - imported)")
    out = subprocess.run([sys.executable, "-c", code, endpoint], capture_output=True, text=True,
                         env=dict(os.environ, **ENV), check=True).stdout.split()
    return float(out[0]), float(out[1])


def report(summaries: dict[str, dict[str, dict[str, float]]], n: int, workers: int,
           repeats: int, stack: tuple[float, float]) -> str:
    lines = [f"machine: {machine_description()}",
             f"corpus: {n} clips (bench_prepare.py's), up to {workers} workers, median of "
             f"{repeats} interleaved rounds, moto S3 on 127.0.0.1", "",
             "| layout | variant | workers | rows/s | vs local | seconds | S3 server CPU s "
             "| driver peak RSS (MiB) | vs local | tree peak RSS (MiB) | rows written |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for layout, summary in summaries.items():
        local = summary["local"]
        for name, figures in summary.items():
            lines.append(f"| {layout} | {name} | {figures['workers']} | "
                         f"{figures['rows_per_s']:.1f} | "
                         f"{figures['rows_per_s'] / local['rows_per_s']:.2f}x | "
                         f"{figures['seconds']:.1f} | {figures['server_cpu_s']:.1f} | "
                         f"{figures['driver_peak_mib']:.0f} | "
                         f"{figures['driver_peak_mib'] / local['driver_peak_mib']:.2f}x | "
                         f"{figures['tree_peak_mib']:.0f} | {figures['rows']} |")
        s3 = summary["s3"]
        speed = s3["rows_per_s"] / local["rows_per_s"]
        memory = s3["driver_peak_mib"] / local["driver_peak_mib"]
        verdicts.append(f"target ({layout}): s3 >= 0.8x local rows/s: {speed:.2f}x, "
                        f"{'met' if speed >= 0.8 else 'NOT met'}; s3 driver peak <= local's "
                        f"(+5%): {memory:.2f}x, {'met' if memory <= 1.05 else 'NOT met'}")
    lines += ["", *verdicts, "", f"the S3 client stack alone: importing s3fs {stack[0]:.0f} MiB,"
              f" its session's first call {stack[1]:.0f} MiB more"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="clips in the corpus")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help="shared: the store on the stage's cores; own-core: on a core of "
                        "its own")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/parla-bench"))
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        source, output, workers, endpoint, result = args.child
        child_main(source, output, int(workers), endpoint, Path(result))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    if "local" not in variants or "s3" not in variants:
        parser.error("--variants needs local and s3 (the comparison)")
    if unknown := set(args.layouts.split(",")) - set(LAYOUTS) - {""}:
        parser.error(f"--layouts: unknown {', '.join(sorted(unknown))}")
    corpus = ensure_corpus(args.cache, args.n, jobs=max(1, (os.cpu_count() or 1)))
    server, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="parla-bench-storage-"))
    try:
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        if "s3-both" in variants:
            upload_release(client, corpus, f"cv/{corpus.name}")
        layouts = [layout for layout in args.layouts.split(",") if layout]
        rounds = {layout: {name: [] for name in variants} for layout in layouts}
        for round_number in range(args.repeats):
            for layout in layouts:
                for name in variants:
                    figures = run_variant(name, corpus, work, args.workers, endpoint, client,
                                          server.pid, layout)
                    rounds[layout][name].append(figures)
                    print(f"round {round_number + 1} {layout} {name}: "
                          f"{figures['rows_per_s']:.1f} rows/s, driver "
                          f"{figures['driver_peak_mib']:.0f} MiB", file=sys.stderr)
        pin(server.pid, layout_cpus("shared")[1])
        text = report({layout: summarise(runs) for layout, runs in rounds.items()}, args.n,
                      args.workers, args.repeats, client_stack_cost(endpoint))
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

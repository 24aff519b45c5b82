#!/usr/bin/env python3
"""Per-clip cost of each step of prepare's worker path, on the benchmark's own clips.

The clips are those of benchmarks/bench_prepare.py (about 4 s of espeak-ng Catalan with its own
gain, padding and noise, 48 kHz MP3). Each step runs over every clip, ``--rounds`` times; the
figure reported is the fastest round's mean CPU time per clip (process CPU time, not wall time,
and the least disturbed round: other processes on a shared machine slow both). The process is
pinned to one core, BLAS/OpenMP threads at 1, and its allocator set to reuse freed memory as
prepare's workers set it (``audio.reuse_freed_memory``; the same settings are applied to an older
checkout that lacks it, so that both are measured alike).

Steps: MP3 decode with its checks (``audio.decode_audio``) by libsndfile, soxr HQ 48 -> 24 kHz
(``audio.resample``), where parla has it the decode straight to 24 kHz by libmpg123 (the default
``--resampler auto`` where libmpg123 is installed, which replaces the two before), conditioning
with the default options (``conditioning.condition_clip``), and the FLAC encode
(``audio.encode_flac``, by libFLAC where it is installed). Conditioning is then broken down by
the functions ``condition_clip`` calls (cProfile, so the parts add up to a little more than the
total).

Usage:
    python benchmarks/profile_conditioning.py                 # 100 clips, 5 rounds
    python benchmarks/profile_conditioning.py --clips 200 --rounds 3 --out /tmp/profile.md

The numbers depend only on the code on PYTHONPATH, so the same script profiles an older
checkout: ``PYTHONPATH=<old>/src python benchmarks/profile_conditioning.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import os
import platform
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")


def reuse_freed_memory() -> None:
    """glibc keeps freed memory for reuse: audio.reuse_freed_memory's settings."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    for parameter, value in ((-3, 16 << 20), (-1, 64 << 20), (-2, 16 << 20)):
        mallopt(ctypes.c_int(parameter), ctypes.c_int(value))


def make_mp3s(count: int) -> list[tuple[str, bytes]]:
    """(sentence, MP3 bytes) of the benchmark corpus's first ``count`` clips."""
    import bench_prepare
    import soundfile as sf

    utterances = bench_prepare.base_utterances()
    clips = []
    for index in range(count):
        sentence, samples = bench_prepare.make_clip(index, utterances)
        buffer = io.BytesIO()
        sf.write(buffer, samples, bench_prepare.SOURCE_RATE, format="MP3")
        clips.append((sentence, buffer.getvalue()))
    return clips


def best_mean(step: Callable[[Any], Any], inputs: list[Any], rounds: int) -> float:
    """CPU seconds per input of the fastest of ``rounds`` passes over ``inputs``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for item in inputs:
            step(item)
        best = min(best, (time.process_time() - started) / len(inputs))
    return best


def conditioning_breakdown(condition: Callable[[Any], Any], inputs: list[Any]
                           ) -> list[tuple[str, float]]:
    """(function, cumulative seconds per clip) of what ``condition_clip`` calls directly."""
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for item in inputs:
        condition(item)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_, _, _, _, callers) in stats.stats.items():  # type: ignore
        for (caller_file, _, caller_name), (_, _, _, cumulative) in callers.items():
            if caller_name == "condition_clip" and caller_file.endswith("conditioning.py"):
                label = f"{Path(filename).stem}.{name}" if line else name
                rows.append((label, cumulative / len(inputs)))
    return sorted(rows, key=lambda row: -row[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--core", type=int, default=None,
                        help="core to pin to (default: the first one this process may use)")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {args.core if args.core is not None else cores[0]})

    import numpy as np

    from parla.audio import decode as audio
    from parla.conditioning import policy as conditioning
    from parla.conditioning import vad
    from parla.options import ConditioningOptions

    reuse_freed_memory()

    print(f"making {args.clips} clips ...", file=sys.stderr, flush=True)
    mp3s = make_mp3s(args.clips)
    decoded = [(s, audio.decode_audio(b, "mp3")[0]) for s, b in mp3s]
    at24k = [(s, audio.resample(x, 48000, 24000)) for s, x in decoded]
    options = ConditioningOptions()
    detector = vad.make_speech_detector(options.vad)

    def condition(item: tuple[str, np.ndarray]) -> Any:
        return conditioning.condition_clip(item[1], 24000, item[0], options, detector)

    conditioned = []
    for item in at24k:
        try:
            conditioned.append(condition(item).samples)
        except conditioning.ClipRejected:
            pass
    steps = [
        ("MP3 decode + checks, libsndfile (audio.decode_audio)",
         best_mean(lambda b: audio.decode_audio(b[1], "mp3"), mp3s, args.rounds)),
        ("soxr HQ 48 -> 24 kHz (audio.resample)",
         best_mean(lambda s: audio.resample(s[1], 48000, 24000, "soxr"), decoded, args.rounds)),
    ]
    if "mpg123_rate" in inspect.signature(audio.decode_audio).parameters:  # not in older parla
        from parla.audio import mpg123

        if mpg123.available():
            steps.append(("MP3 decode + checks straight to 24 kHz, libmpg123 "
                          "(audio.decode_audio, --resampler mpg123)",
                          best_mean(lambda b: audio.decode_audio(b[1], "mp3", mpg123_rate=24000),
                                    mp3s, args.rounds)))
    steps += [
        ("conditioning (conditioning.condition_clip)",
         best_mean(condition, at24k, args.rounds)),
        ("FLAC encode (audio.encode_flac)",
         best_mean(lambda x: audio.encode_flac(x, 24000), conditioned, args.rounds)),
    ]
    seconds = np.mean([len(x) / 24000 for _, x in at24k])
    lines = [f"Machine: {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, Python {platform.python_version()}; pinned to one core",
             f"{args.clips} clips, mean {seconds:.2f} s; CPU time per clip, fastest of "
             f"{args.rounds} rounds", "", "| step | ms per clip |", "|---|---|"]
    lines += [f"| {name} | {value * 1000:.2f} |" for name, value in steps]
    lines += ["", "conditioning, by what condition_clip calls (cProfile, cumulative):", "",
              "| function | ms per clip |", "|---|---|"]
    lines += [f"| {name} | {value * 1000:.2f} |"
              for name, value in conditioning_breakdown(condition, at24k) if value >= 5e-6]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

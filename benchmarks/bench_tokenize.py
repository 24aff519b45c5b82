#!/usr/bin/env python
"""The real tokenize stage on real prepared shards: throughput, batches, phases, precision.

Writes a prepared corpus (speech-like FLAC clips in shards of ``--rows_per_shard``), then runs
`parla.stages.tokenize.tokenize` on it in a fresh process per variant, with defaults except
``--device`` (and ``--batch_seconds`` / ``--precision`` when given):

* parla: this checkout;
* today (with ``--baseline_src DIR``): the same stage from another checkout's ``src`` (e.g.
  ``git archive BASE src | tar -x -C DIR``), run side by side on the same shards;
* compiled (with ``--torch_compile``): this checkout with ``--torch_compile``, its compile time
  included (inductor's cache is cleared first, so it is a first run's).

It reports audio-s/s and clips/s, the batches each variant formed (clips and audio seconds per
batch, padding), parla's time per phase (read, decode, H2D, encode, D2H, build, write, from
PARLA_TOKENIZE_PROFILE), GPU busy % and memory through NVML when present, the TF32/precision
flags, and whether both variants wrote the same bytes. Without ``--snac_model`` the model is a
randomly initialised SNAC of the real 24 kHz config. Not a test.

    python benchmarks/bench_tokenize.py --device cpu --clips 160
    python benchmarks/bench_tokenize.py --device cuda --clips 4000 --snac_model DIR
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RUN_STAGE = """
import json, sys, time, torch
from parla.options import TokenizeOptions
from parla.stages.tokenize import tokenize
args = json.loads(sys.argv[1])
if args.pop("threads"):
    torch.set_num_threads(int(sys.argv[2]))
started = time.perf_counter()
tokenize(TokenizeOptions(**args))
print(json.dumps({"wall_s": time.perf_counter() - started}))
"""


def make_clips(count: int, min_seconds: float, max_seconds: float, seed: int) -> list[bytes]:
    """FLAC clips (24 kHz, 16-bit) of speech-like noise: tone bursts under a syllable envelope."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(count):
        n = int(rng.uniform(min_seconds, max_seconds) * 24000)
        t = np.arange(n) / 24000
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t), 0, None)
        voice = np.sin(2 * np.pi * rng.uniform(90, 250) * t * (1 + 0.05 * np.sin(3 * t)))
        audio = 0.3 * envelope * voice + rng.normal(0, 0.01, n)
        buffer = io.BytesIO()
        sf.write(buffer, audio.astype(np.float32), 24000, format="FLAC", subtype="PCM_16")
        clips.append(buffer.getvalue())
    return clips


def write_corpus(folder: Path, clips: list[bytes], rows_per_shard: int) -> list[int]:
    """A prepared folder (one config, train split) of the clips; returns their lengths."""
    from parla.store.shards import prepared_table, shard_path, write_table_atomic

    lengths = [sf.info(io.BytesIO(data)).frames for data in clips]
    count = -(-len(clips) // rows_per_shard)
    for index in range(count):
        rows = [{"audio": data, "text": "central: Bon dia a tothom.", "dialect": "central",
                 "speaker_id": f"s{i % 7}", "duration": lengths[i] / 24000,
                 "source_path": f"clip{i}.mp3"}
                for i, data in enumerate(clips) if i // rows_per_shard == index]
        write_table_atomic(shard_path(folder, "central", "train", index, count),
                           prepared_table(rows, 24000))
    return lengths


def run_variant(src: Path, options: dict, threads: int | None, profile: Path) -> dict:
    """The stage in a fresh process importing parla from ``src``; its wall time and NVML use."""
    env = {**os.environ, "PYTHONPATH": str(src), "PARLA_DISABLE_PROGRESS": "1",
           "PARLA_TOKENIZE_PROFILE": str(profile)}
    if options.get("torch_compile"):  # a first run's compile time, not a cached one
        env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="parla-inductor-")
    sampler = NvmlSampler(options["device"])
    command = [sys.executable, "-c", RUN_STAGE, json.dumps({**options, "threads": bool(threads)}),
               str(threads or 0)]
    started, cpu = time.perf_counter(), os.times()
    with sampler:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the stage failed ({src}):\n{done.stderr[-3000:]}")
    after = os.times()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    result["cpu_s"] = after.children_user + after.children_system - cpu.children_user \
        - cpu.children_system
    return result | sampler.summary()


class NvmlSampler:
    """GPU busy % and memory used, sampled every 0.2 s while the stage runs (CUDA and pynvml)."""

    def __init__(self, device: str) -> None:
        self.samples: list[tuple[int, int]] = []
        self.handle = None
        if device.startswith("cuda"):
            try:
                import pynvml

                pynvml.nvmlInit()
                index = int(device.split(":")[1]) if ":" in device else 0
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                self.nvml = pynvml
            except Exception:  # no NVML: the report says so
                self.handle = None

    def __enter__(self) -> NvmlSampler:
        import threading

        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        if self.handle is not None:
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.2):
            rates = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            memory = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
            self.samples.append((rates.gpu, memory.used))

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu": "no NVML samples (CPU run, or pynvml missing)"}
        busy = [s[0] for s in self.samples]
        return {"gpu": f"busy mean {np.mean(busy):.0f}% (p50 {np.median(busy):.0f}%), memory "
                       f"max {max(s[1] for s in self.samples) / 2**30:.1f} GiB"}


def old_plan(lengths: list[int], rows_per_shard: int, batch_seconds: float) -> list[list[int]]:
    """(clips, audio samples, padded samples) of the batches the per-shard plan forms."""
    from parla.tokens.codec import plan_batches

    padded = [-(-n // 2048) * 2048 for n in lengths]
    batches = []
    for start in range(0, len(lengths), rows_per_shard):
        part = padded[start:start + rows_per_shard]
        for batch in plan_batches(part, int(batch_seconds * 24000)):
            batches.append([len(batch), sum(lengths[start + i] for i in batch),
                            len(batch) * part[batch[0]]])
    return batches


def batch_summary(batches: list[list[int]]) -> str:
    """Mean clips and audio seconds per batch, the audio-weighted mean, and the padding."""
    clips = np.array([b[0] for b in batches])
    audio = np.array([b[1] for b in batches]) / 24000
    padded = sum(b[2] for b in batches) / 24000
    weighted = float((audio * audio).sum() / audio.sum())
    edges = [1, 2, 3, 5, 9, 17, 33, 65, 129, np.inf]
    histogram = np.histogram(clips, bins=edges)[0]
    shown = ", ".join((f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1:g}" if hi != np.inf
                       else f">={lo}") + f": {n}"
                      for lo, hi, n in zip(edges, edges[1:], histogram, strict=False) if n)
    return (f"{len(batches)} batches; clips/batch mean {clips.mean():.2f} max {clips.max()}; "
            f"audio s/batch mean {audio.mean():.1f} (audio-weighted {weighted:.1f}) max "
            f"{audio.max():.1f}; padding {100 * (1 - audio.sum() / padded):.1f}%; clips/batch "
            f"histogram {{{shown}}}")


def read_profile(path: Path) -> dict:
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if not lines:
        return {}
    seconds: dict[str, float] = {}
    for line in lines:
        for phase, value in line["seconds"].items():
            seconds[phase] = seconds.get(phase, 0.0) + value
    return {"seconds": seconds, "batches": [b for line in lines for b in line["batches"]],
            "precision": lines[0]["precision"], "batch_seconds": lines[0]["batch_seconds"],
            "torch_compile": lines[0].get("torch_compile"),
            "calls": len(lines)}


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.parquet"))}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snac_model", help="Hub id or folder (default: random 24 kHz SNAC)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--clips", type=int, default=160)
    parser.add_argument("--rows_per_shard", type=int, default=32)
    parser.add_argument("--min_seconds", type=float, default=1.5)
    parser.add_argument("--max_seconds", type=float, default=6.0)
    parser.add_argument("--batch_seconds", type=float, help="default: the stage's own")
    parser.add_argument("--precision", default="exact", choices=("exact", "bf16"))
    parser.add_argument("--no_dedupe_frames", action="store_true")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--baseline_src", help="another checkout's src/ to run as 'today'")
    parser.add_argument("--torch_compile", action="store_true",
                        help="also run this checkout with --torch_compile ('compiled')")
    parser.add_argument("--work_dir", help="keep the corpus and outputs here (default: temp)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    from parla.testing import write_offline_models

    here = Path(__file__).resolve().parents[1] / "src"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        snac, tokenizer = write_offline_models(work / "models")
        clips = make_clips(args.clips, args.min_seconds, args.max_seconds, args.seed)
        lengths = write_corpus(work / "prepared", clips, args.rows_per_shard)
        figures = {"clips": len(clips), "audio_s": sum(lengths) / 24000,
                   "rows_per_shard": args.rows_per_shard, "device": args.device,
                   "model": args.snac_model or "random SNAC (24 kHz config)", "variants": {}}
        variants = {"parla": here}
        if args.baseline_src:
            variants = {"today": Path(args.baseline_src).resolve(), **variants}
        if args.torch_compile:
            variants["compiled"] = here
        for name, src in variants.items():
            options = {"input_dir": str(work / "prepared"), "output_dir": str(work / name),
                       "snac_model": args.snac_model or str(snac),
                       "text_tokenizer": str(tokenizer), "device": args.device,
                       "dedupe_frames": not args.no_dedupe_frames, "overwrite": True}
            if args.batch_seconds:
                options["batch_seconds"] = args.batch_seconds
            if args.precision != "exact":
                options["precision"] = args.precision
            if name == "compiled":
                options["torch_compile"] = True
            profile = work / f"{name}.profile.jsonl"
            profile.unlink(missing_ok=True)
            result = run_variant(src, options, args.threads, profile)
            figures["variants"][name] = result | {"profile": read_profile(profile),
                                                  "digests": digests(work / name)}
        report(figures, lengths, args)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))


def report(figures: dict, lengths: list[int], args: argparse.Namespace) -> None:
    import torch

    print(f"device {figures['device']}, torch {torch.__version__}, python "
          f"{sys.version.split()[0]}, torch threads {args.threads or torch.get_num_threads()}, "
          f"model {figures['model']}")
    print(f"{figures['clips']} clips, {figures['audio_s']:.1f} s of audio "
          f"({args.min_seconds}-{args.max_seconds} s each), {figures['rows_per_shard']} rows "
          f"per shard, dedupe {'off' if args.no_dedupe_frames else 'on'}")
    print(f"{'variant':<10}{'wall s':>9}{'clips/s':>9}{'audio s/s':>11}{'CPU s':>9}  GPU")
    for name, result in figures["variants"].items():
        wall = result["wall_s"]
        print(f"{name:<10}{wall:>9.1f}{figures['clips'] / wall:>9.2f}"
              f"{figures['audio_s'] / wall:>11.2f}{result['cpu_s']:>9.1f}  {result['gpu']}")
    for budget in (4.0, 600.0):
        print(f"per-shard plan (today), {budget:g} s budget: "
              f"{batch_summary(old_plan(lengths, args.rows_per_shard, budget))}")
    parla = figures["variants"]["parla"]["profile"]
    if parla:
        print(f"parla batches ({parla['calls']} calls, batch_seconds {parla['batch_seconds']:.0f})"
              f": {batch_summary(parla['batches'])}")
        phases = parla["seconds"]
        print("parla phases (s; decode summed over its threads, decode_wait is the encoder "
              "waiting on it): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
        print(f"precision: {parla['precision']}")
    if "today" in figures["variants"]:
        same = figures["variants"]["today"]["digests"] == figures["variants"]["parla"]["digests"]
        print(f"output shards byte-identical to today's: {same} "
              f"({len(figures['variants']['parla']['digests'])} shards)")
    if "compiled" in figures["variants"]:
        compiled = figures["variants"]["compiled"]
        same = compiled["digests"] == figures["variants"]["parla"]["digests"]
        phases = compiled["profile"].get("seconds", {})
        compile_s = phases.get("compile", 0.0)
        print(f"compiled: torch.compile {compiled['profile'].get('torch_compile')}, first batch "
              f"compiled in {compile_s:.1f} s, encode without that "
              f"{phases.get('encode', 0) - compile_s:.1f} s against eager's "
              f"{parla.get('seconds', {}).get('encode', 0):.1f} s; output shards byte-identical "
              f"to eager's: {same}")


if __name__ == "__main__":
    main()

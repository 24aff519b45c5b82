#!/usr/bin/env python3
"""Benchmark parla's prepare stage against the original approach, side by side in one run.

What runs (each variant in its own subprocess, pinned to its cores, BLAS/OpenMP threads at 1):

  original       the original prepare_by_dialect.py approach: a Python loop over the rows that
                 decodes each 48 kHz MP3 (soundfile), resamples it with the FFT resampler
                 ``scipy.signal.resample(x, int(len(x) * 24000 / 48000))``, builds a dict with the
                 audio array and appends it to a list; then every array is encoded to WAV bytes
                 (16-bit PCM: what ``datasets.Audio.encode_example`` did with an array before
                 datasets 4, and what casting the list to ``Audio(sampling_rate=24000)`` did), and
                 ``Dataset.from_list`` + ``cast_column("audio", Audio(sampling_rate=24000))`` +
                 ``save_to_disk`` write the result. One core.
  parla1         ``parla.prepare(PrepareOptions(..., num_workers=1))``, defaults otherwise
                 (conditioning included when the options have it). One core.
  parla2         the same with ``num_workers=2``, pinned to two cores: the scaling figure.
  parla1-nocond  parla1 with ``--no_condition_audio`` (``condition_audio=False``: every audio
                 step off, the text rules kept), so the cost of conditioning is visible; with
                 an older parla without that switch, every conditioning step switched off.

The input is a generated raw Common Voice release (validated.tsv + clip_durations.tsv + clips/)
of N clips of about 4 s: 48 kHz mono MP3 of Catalan speech synthesised once with espeak-ng and
reused with a different gain, padding and background noise per clip, 10 clips per speaker over
the 7 dialects (so parla's default speaker filters keep every row). Corpora are cached under
``--cache`` (default /tmp/parla-bench/cv-n<N>), so reruns skip generation.

Reported per variant and N: rows/s (input rows / wall seconds of the stage itself; interpreter
start-up and the variant's library imports are excluded, worker start-up is included), peak RSS
(summed over the variant's process tree, sampled every 50 ms, and never below the main process's
exact ``ru_maxrss``), output size, and rows/s relative to the original.

Usage:
    python benchmarks/bench_prepare.py                          # N=500 and N=5000, all variants
    python benchmarks/bench_prepare.py --n 200 --variants original,parla1
    python benchmarks/bench_prepare.py --out /tmp/prepare-bench.md --json /tmp/prepare-bench.json

Needs espeak-ng (a synthetic voiced signal stands in without it, with a warning) and a
libsndfile that writes MP3 (soundfile >= 0.12 wheels do).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE_RATE = 48_000  # Common Voice clips are 48 kHz mono MP3
TARGET_RATE = 24_000  # SNAC / Orpheus
CLIPS_PER_SPEAKER = 10  # parla's defaults (min 3, balance to 50 per speaker) keep every row
CORPUS_VERSION = "1"  # bump when the generated corpus changes, so stale caches are rebuilt
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "parla-bench"
RSS_SAMPLE_S = 0.05
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")

# Sentences that espeak-ng reads in about 3.1-3.7 s at 165 words per minute, so clips with their
# padding last about 4 s (the Common Voice Catalan average is 5 s).
SENTENCES = (
    "L'home del barret vermell viu al costat de la plaça.",
    "La biblioteca municipal tanca a les vuit del vespre.",
    "Els pescadors tornen a port abans que surti el sol.",
    "Cada matí esmorzo pa amb tomàquet i un cafè amb llet.",
    "El tren de rodalies arriba amb vint minuts de retard.",
    "Hem de comprar pa, llet, ous i una mica de formatge.",
)
VOICES = ("m3", "f2", "m1", "f4")  # espeak-ng Catalan voice variants: ca+<voice>
ACCENTS = ("Central", "Valencià", "Balear", "Nord-occidental", "Septentrional", "Tortosí",
           "Alacantí")  # Common Voice `accents` values; parla maps each to its dialect
AGES = ("twenties", "thirties", "fourties", "fifties", "sixties")
CV_HEADER = ("client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
             "down_votes", "age", "gender", "accents", "variant", "locale", "segment")


@dataclass(frozen=True)
class Variant:
    name: str
    cores: int
    description: str


VARIANTS = {v.name: v for v in (
    Variant("original", 1, "loop + scipy.signal.resample (FFT) + list + Dataset.from_list, WAV"),
    Variant("parla1", 1, "parla prepare, num_workers=1, defaults (FLAC, --resampler auto)"),
    Variant("parla2", 2, "parla prepare, num_workers=2"),
    Variant("parla1-nocond", 1, "parla prepare, num_workers=1, --no_condition_audio"),
)}
DEFAULT_VARIANTS = ("original", "parla1", "parla2", "parla1-nocond")
DEFAULT_SIZES = (500, 5000)
# one core against the original's one core: defaults (conditioning on), and a draft run with
# --no_condition_audio, which does the same work as the original
PARLA1_TARGET = 5.0
NOCOND_TARGET = 6.0


# --- corpus generation -----------------------------------------------------------------------

def _synthesise(text: str, voice: str) -> Any:
    """espeak-ng Catalan speech as float32 mono at 48 kHz, peak 0.8."""
    import numpy as np
    import soundfile as sf
    import soxr

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", f"ca+{voice}", "-s", "165", "-w", str(wav), text],
                       check=True, capture_output=True)
        samples, rate = sf.read(wav, dtype="float32")
    samples = soxr.resample(samples, rate, SOURCE_RATE).astype(np.float32)
    return samples * np.float32(0.8 / max(float(np.abs(samples).max()), 1e-6))


def _stand_in_speech(text: str, index: int) -> Any:
    """Without espeak-ng: syllable-like bursts of a harmonic voice, about as long as speech."""
    import numpy as np

    t = np.arange(int(SOURCE_RATE * 0.065 * len(text))) / SOURCE_RATE
    pitch = 110 + 40 * index
    voice = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    samples = (voice * envelope).astype(np.float32)
    return samples * np.float32(0.8 / float(np.abs(samples).max()))


def base_utterances() -> list[tuple[str, Any]]:
    """(sentence, 48 kHz speech) for every sentence x voice, synthesised once per corpus."""
    if shutil.which("espeak-ng") is None:
        print("warning: espeak-ng not found; clips use a synthetic stand-in for speech",
              file=sys.stderr)
        return [(s, _stand_in_speech(s, i % len(VOICES)))
                for i, s in enumerate(SENTENCES * len(VOICES))]
    return [(sentence, _synthesise(sentence, voice)) for voice in VOICES for sentence in SENTENCES]


_utterances: list[tuple[str, Any]] = []  # set once per generator process


def _init_generator(utterances: list[tuple[str, Any]]) -> None:
    global _utterances
    _utterances = utterances


def make_clip(index: int, utterances: list[tuple[str, Any]], seed: int = 0) -> tuple[str, Any]:
    """Clip ``index``: one utterance with its own gain, padding and noise (sentence, samples)."""
    import numpy as np

    rng = np.random.default_rng([seed, index])
    sentence, speech = utterances[int(rng.integers(len(utterances)))]
    gain = 10 ** (rng.uniform(-9.0, 0.0) / 20)
    lead, trail = (int(rng.uniform(0.15, 0.45) * SOURCE_RATE) for _ in range(2))
    samples = np.concatenate([np.zeros(lead, np.float32), speech * np.float32(gain),
                              np.zeros(trail, np.float32)])
    noise_rms = 10 ** (rng.uniform(-66.0, -52.0) / 20)  # a quiet room, well above digital zero
    samples += rng.normal(0.0, noise_rms, samples.size).astype(np.float32)
    return sentence, np.clip(samples, -1.0, 1.0)


def _write_clips(task: tuple[Path, list[int]]) -> list[tuple[int, str, str, int]]:
    """Encode a chunk of clips to MP3 files: (index, file name, sentence, duration ms) each."""
    import soundfile as sf

    clips_dir, indices = task
    written = []
    for index in indices:
        sentence, samples = make_clip(index, _utterances)
        name = f"common_voice_ca_{index + 1:08d}.mp3"
        buffer = io.BytesIO()
        sf.write(buffer, samples, SOURCE_RATE, format="MP3")
        (clips_dir / name).write_bytes(buffer.getvalue())
        written.append((index, name, sentence, round(samples.size / SOURCE_RATE * 1000)))
    return written


def _speaker_row(index: int, count: int) -> dict[str, str]:
    speakers = max(count // CLIPS_PER_SPEAKER, 1)
    speaker = min(index // CLIPS_PER_SPEAKER, speakers - 1)  # the last one takes the remainder
    return {"client_id": hashlib.sha256(f"bench-speaker-{speaker}".encode()).hexdigest(),
            "age": AGES[speaker % len(AGES)],
            "gender": "male_masculine" if speaker % 2 else "female_feminine",
            "accents": ACCENTS[speaker % len(ACCENTS)]}


def ensure_corpus(cache: Path, count: int, jobs: int) -> Path:
    """The cached corpus of ``count`` clips, generated (in ``jobs`` processes) when missing."""
    import multiprocessing as mp

    folder = cache / f"cv-n{count}"
    marker = folder / ".complete"
    if marker.is_file() and marker.read_text().strip() == CORPUS_VERSION:
        return folder
    started = time.monotonic()
    print(f"generating {count} clips in {folder} ...", file=sys.stderr, flush=True)
    building = cache / f".cv-n{count}.partial"
    shutil.rmtree(building, ignore_errors=True)
    (building / "clips").mkdir(parents=True)
    utterances = base_utterances()
    chunk = 50
    tasks = [(building / "clips", list(range(start, min(start + chunk, count))))
             for start in range(0, count, chunk)]
    with mp.get_context("spawn").Pool(jobs, _init_generator, (utterances,)) as pool:
        written = [row for rows in pool.imap(_write_clips, tasks) for row in rows]
    with open(building / "validated.tsv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, CV_HEADER, delimiter="\t", quoting=csv.QUOTE_NONE,
                                lineterminator="\n")
        writer.writeheader()
        for index, name, sentence, _ in written:
            writer.writerow({key: "" for key in CV_HEADER} | _speaker_row(index, count) | {
                "path": name, "sentence_id": hashlib.sha256(sentence.encode()).hexdigest(),
                "sentence": sentence, "up_votes": "2", "down_votes": "0", "locale": "ca"})
    with open(building / "clip_durations.tsv", "w", encoding="utf-8") as handle:
        handle.write("clip\tduration[ms]\n")
        handle.writelines(f"{name}\t{ms}\n" for _, name, _, ms in written)
    (building / ".complete").write_text(CORPUS_VERSION + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    building.rename(folder)
    print(f"generated {count} clips in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return folder


# --- the variants (run inside the pinned child process) --------------------------------------

def run_original(corpus: Path, out_dir: Path) -> int:
    """The original prepare_by_dialect.py approach; returns the rows written."""
    import datasets
    import numpy as np
    import pandas as pd
    import soundfile as sf
    from scipy.signal import resample

    table = pd.read_csv(corpus / "validated.tsv", sep="\t", quoting=csv.QUOTE_NONE, dtype=str,
                        keep_default_na=False)
    processed = []
    for record in table.to_dict("records"):
        try:
            audio, rate = sf.read(corpus / "clips" / record["path"], dtype="float32")
            if audio.ndim > 1:
                audio = audio.mean(axis=1)
            audio = resample(audio, int(len(audio) * TARGET_RATE / rate)).astype(np.float32)
        except Exception:  # the original skipped any clip that failed, whatever the reason
            continue
        duration = len(audio) / TARGET_RATE
        if not 1.0 <= duration <= 20.0:
            continue
        voice = record["accents"].lower()
        processed.append({"audio": {"array": audio, "sampling_rate": TARGET_RATE},
                          "text": f"{voice}: {record['sentence']}",
                          "original_text": record["sentence"], "voice_name": voice,
                          "dialect": voice, "speaker_id": record["client_id"],
                          "gender": record["gender"], "age": record["age"],
                          "duration": duration, "source_path": record["path"]})
    # datasets < 4 encoded every array to WAV when the list became a Dataset with an Audio
    # column, while the caller's list still held the arrays; datasets 5 needs torchcodec for
    # that, so the same WAV encoding is done here, with the list kept alive the same way.
    encoded = [row | {"audio": {"bytes": _wav_bytes(row["audio"]["array"], TARGET_RATE),
                                "path": None}} for row in processed]
    dataset = datasets.Dataset.from_list(encoded)
    dataset = dataset.cast_column("audio", datasets.Audio(sampling_rate=TARGET_RATE))
    dataset.save_to_disk(str(out_dir))
    return len(dataset)


def _wav_bytes(samples: Any, sample_rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV")  # PCM_16, as datasets.Audio wrote it
    return buffer.getvalue()


def conditioning_off() -> Any:
    """ConditioningOptions of --no_condition_audio (every step off where parla predates that
    switch), or None when parla has no conditioning."""
    import dataclasses

    from parla import options

    if not hasattr(options, "ConditioningOptions"):
        return None
    names = {f.name for f in dataclasses.fields(options.ConditioningOptions)}
    if "condition_audio" in names:
        return options.ConditioningOptions(condition_audio=False)
    off = {"trim_silence": False, "loudness_norm": False, "max_clipped_fraction": None,
           "min_snr_db": None, "min_chars_per_sec": None, "max_chars_per_sec": None,
           "normalize_text": False, "reject_foreign_text": False}
    return options.ConditioningOptions(**{k: v for k, v in off.items() if k in names})


def run_parla(corpus: Path, out_dir: Path, workers: int, conditioning: bool) -> int:
    from parla.options import PrepareOptions
    from parla.stages.prepare import prepare

    extra: dict[str, Any] = {}
    if not conditioning:
        off = conditioning_off()
        if off is None:
            raise SystemExit("parla has no ConditioningOptions: nothing to switch off")
        extra["conditioning"] = off
    options = PrepareOptions(datasets=(str(corpus),), output_dir=str(out_dir),
                             num_workers=workers, overwrite=True, **extra)
    result = prepare(options)
    return int(result.statistics["total"]["rows"])


# What each variant imports up front, imported before the clock starts: a one-off cost of
# seconds (datasets alone takes about 2 s) that would otherwise dominate small runs. Only modules
# the variant loads anyway, so the peak RSS is not inflated; what parla imports lazily, and what
# its spawned workers import, is still timed.
PRELOAD = {
    "original": ("numpy", "pandas", "soundfile", "scipy.signal", "datasets"),
    "parla": ("parla.options", "parla.stages.prepare", "parla.hub.client"),
}


def _preload(variant: str) -> None:
    import importlib

    for module in PRELOAD["original" if variant == "original" else "parla"]:
        importlib.import_module(module)


def child_main(variant: str, corpus: Path, out_dir: Path, result_file: Path) -> None:
    """Run one variant in this (already pinned) process and write its figures as JSON."""
    rows_in = sum(1 for _ in open(corpus / "validated.tsv", encoding="utf-8")) - 1
    _preload(variant)
    started = time.perf_counter()
    if variant == "original":
        rows_out = run_original(corpus, out_dir)
    else:
        rows_out = run_parla(corpus, out_dir, workers=VARIANTS[variant].cores,
                             conditioning=variant != "parla1-nocond")
    seconds = time.perf_counter() - started
    result_file.write_text(json.dumps({
        "seconds": seconds, "rows_in": rows_in, "rows_out": rows_out,
        "main_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "cpus": sorted(os.sched_getaffinity(0))}))


# --- the parent: pin, run, measure -----------------------------------------------------------

def _process_tree(root: int) -> set[int]:
    """``root`` and every process below it (a /proc scan: no psutil needed)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return tree


def _rss_bytes(pids: set[int], page_size: int) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as handle:
                total += int(handle.read().split()[1]) * page_size
        except OSError:
            continue  # exited since the tree was scanned
    return total


class TreeRssSampler(threading.Thread):
    """Peak summed RSS of a process tree, sampled every RSS_SAMPLE_S seconds.

    The tree is rescanned only every TREE_RESCAN samples (a /proc scan costs milliseconds, which
    would be taken from the cores being measured); workers live for the whole stage.
    """

    TREE_RESCAN = 10

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak = pid, 0
        self.stopped = threading.Event()
        self.page_size = os.sysconf("SC_PAGE_SIZE")

    def run(self) -> None:
        samples, tree = 0, {self.pid}
        while not self.stopped.is_set():
            if samples % self.TREE_RESCAN == 0:
                tree = _process_tree(self.pid)
            self.peak = max(self.peak, _rss_bytes(tree, self.page_size))
            samples += 1
            self.stopped.wait(RSS_SAMPLE_S)

    def stop(self) -> int:
        self.stopped.set()
        self.join()
        return self.peak


def _child_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({name: "1" for name in THREAD_VARIABLES})
    env.update({"PARLA_DISABLE_PROGRESS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "HF_HOME": str(work / "hf-home"), "PYTHONHASHSEED": "0"})
    return env


def run_variant(variant: Variant, corpus: Path, work: Path, cpus: list[int]) -> dict[str, Any]:
    """Run one variant in a fresh pinned subprocess; its figures, or {"error": ...}."""
    out_dir = work / f"{variant.name}-{corpus.name}"
    result_file = work / f"{variant.name}-{corpus.name}.json"
    log_file = work / f"{variant.name}-{corpus.name}.log"
    shutil.rmtree(out_dir, ignore_errors=True)
    result_file.unlink(missing_ok=True)
    pinned = cpus[:variant.cores]
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant.name,
               "--corpus", str(corpus), "--child-out", str(out_dir),
               "--child-result", str(result_file)]
    own_cpus = os.sched_getaffinity(0)
    with open(log_file, "w") as log:
        # pinned before the interpreter starts, so every thread and worker it spawns inherits it
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=_child_env(work),
                                   preexec_fn=lambda: os.sched_setaffinity(0, pinned))
        # the sampler runs on the last core, off the first one that one-core variants use
        os.sched_setaffinity(0, cpus[-1:])
        sampler = TreeRssSampler(process.pid)
        sampler.start()
        returncode = process.wait()
        tree_peak = sampler.stop()
        os.sched_setaffinity(0, own_cpus)
    if returncode != 0 or not result_file.is_file():
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        return {"error": f"exit {returncode}; last lines of {log_file}:\n  " + "\n  ".join(tail)}
    figures = json.loads(result_file.read_text())
    figures["output_bytes"] = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    shutil.rmtree(out_dir, ignore_errors=True)
    figures["tree_peak_rss_bytes"] = tree_peak
    figures["peak_rss_mib"] = max(tree_peak, figures["main_maxrss_kib"] * 1024) / 2**20
    figures["rows_per_s"] = figures["rows_in"] / figures["seconds"]
    return figures


# --- report ----------------------------------------------------------------------------------

def child_figures(name: str, code: int, result: Path, log: Path) -> dict:
    """A measured child's JSON figures; a failed child ends the benchmark with its last lines."""
    if code != 0 or not result.is_file():
        tail = log.read_text(errors="replace").splitlines()[-12:]
        raise SystemExit(f"{name} failed (exit {code}):\n  " + "\n  ".join(tail))
    return json.loads(result.read_text())


def emit(text: str, out: Path | None) -> None:
    """Print the report, and write it to ``out`` (markdown) when given."""
    print(text)
    if out:
        out.write_text(text + "\n", encoding="utf-8")


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle
                        if line.startswith("model name")), cpu)
        with open("/proc/meminfo") as handle:
            memory = int(handle.readline().split()[1]) / 2**20
    except OSError:
        memory = float("nan")
    import datasets
    import numpy
    import scipy
    import soundfile
    import soxr

    return (f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, CPU only; "
            f"Python {platform.python_version()}, numpy {numpy.__version__}, scipy "
            f"{scipy.__version__}, soxr {soxr.__version__}, soundfile {soundfile.__version__} "
            f"(libsndfile {soundfile.__libsndfile_version__}), datasets {datasets.__version__}")


def format_table(results: list[dict[str, Any]]) -> str:
    baseline = {r["n"]: r["rows_per_s"] for r in results
                if r["variant"] == "original" and "error" not in r}
    header = ("| variant | cores | N | rows out | seconds | rows/s | peak RSS MiB | output MiB "
              "| × original |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['cores']} | {r['n']} | failed | | | | | |")
            continue
        ratio = (f"{r['rows_per_s'] / baseline[r['n']]:.2f}" if r["n"] in baseline else "–")
        lines.append(f"| {r['variant']} | {r['cores']} | {r['n']} | {r['rows_out']} | "
                     f"{r['seconds']:.1f} | {r['rows_per_s']:.1f} | {r['peak_rss_mib']:.0f} | "
                     f"{r['output_bytes'] / 2**20:.0f} | {ratio} |")
    return "\n".join(lines)


def format_targets(results: list[dict[str, Any]]) -> str:
    """The targets of the prepare benchmark, from this run's figures."""
    good = {(r["variant"], r["n"]): r for r in results if "error" not in r}
    sizes = sorted({r["n"] for r in results})
    lines = []
    for n in sizes:
        original, parla1, parla2 = (good.get((v, n)) for v in ("original", "parla1", "parla2"))
        for variant, target in (("parla1", PARLA1_TARGET), ("parla1-nocond", NOCOND_TARGET)):
            run = good.get((variant, n))
            if original and run:
                ratio = run["rows_per_s"] / original["rows_per_s"]
                lines.append(f"- N={n}: {variant} / original rows/s = {ratio:.2f}× "
                             f"(target ≥ {target:g}×: {'met' if ratio >= target else 'missed'})")
        if parla1 and parla2:
            speedup = parla2["rows_per_s"] / parla1["rows_per_s"]
            lines.append(f"- N={n}: parla2 / parla1 rows/s = {speedup:.2f}× "
                         f"(target: near-linear, ~2×)")
        nocond = good.get(("parla1-nocond", n))
        if parla1 and nocond:
            share = 1 - nocond["seconds"] / parla1["seconds"]
            lines.append(f"- N={n}: conditioning takes {share:.0%} of parla1's time "
                         f"(parla1-nocond / parla1 rows/s = "
                         f"{nocond['rows_per_s'] / parla1['rows_per_s']:.2f}×)")
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        for variant in dict.fromkeys(r["variant"] for r in results):
            a, b = good.get((variant, small)), good.get((variant, large))
            if a and b:
                growth = b["peak_rss_mib"] / a["peak_rss_mib"]
                target = (f" (target ≤ 1.3×: {'met' if growth <= 1.3 else 'missed'})"
                          if variant.startswith("parla") else "")
                lines.append(f"- {variant}: peak RSS N={large} / N={small} = {growth:.2f}×{target}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", metavar="N",
                        help=f"clips in the corpus; repeat for several sizes "
                             f"(default: {' '.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS)} "
                             f"(default: all of them)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"where generated corpora are kept (default: {DEFAULT_CACHE})")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder for outputs and logs (default: <cache>/work)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the results as a Markdown snippet for docs/PERFORMANCE.md")
    parser.add_argument("--json", type=Path, default=None, help="also write raw figures as JSON")
    # internal: one variant in a pinned child process
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None:
        args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in args.variant_list if v not in VARIANTS]
        if unknown or not args.variant_list:
            parser.error(f"unknown variant(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(VARIANTS)}")
        args.n = args.n or list(DEFAULT_SIZES)
        if any(n < 1 for n in args.n):
            parser.error("--n must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        child_main(args.child, args.corpus, args.child_out, args.child_result)
        return 0
    cpus = sorted(os.sched_getaffinity(0))
    needed = max(VARIANTS[v].cores for v in args.variant_list)
    if len(cpus) < needed:
        print(f"warning: only {len(cpus)} core(s) available; multi-core variants share them",
              file=sys.stderr)
        cpus = cpus * needed
    work = args.work or args.cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.n:
        corpus = ensure_corpus(args.cache, n, jobs=len(os.sched_getaffinity(0)))
        for name in args.variant_list:
            variant = VARIANTS[name]
            print(f"running {name} (N={n}, {variant.cores} core(s)) ...", file=sys.stderr,
                  flush=True)
            figures = run_variant(variant, corpus, work, cpus)
            if "error" in figures:
                print(f"{name} failed: {figures['error']}", file=sys.stderr)
            results.append({"variant": name, "cores": variant.cores, "n": n} | figures)
    machine = machine_description()
    table, targets = format_table(results), format_targets(results)
    command = "python benchmarks/bench_prepare.py " + " ".join(
        [f"--n {n}" for n in args.n] + [f"--variants {','.join(args.variant_list)}"])
    report = (f"Machine: {machine}\n\nCommand: `{command}`\n\n{table}\n\n{targets}\n\n"
              "rows/s = input rows / wall seconds of the stage (interpreter start-up and imports "
              "excluded, worker start-up included); "
              "peak RSS = summed over the variant's processes (sampled every "
              f"{RSS_SAMPLE_S * 1000:.0f} ms, at least the main process's ru_maxrss); "
              "the original writes 16-bit WAV (as datasets' Audio encoded arrays), parla 16-bit "
              "FLAC, each row once (its dialect's config; `all` is their union).")
    print(report)
    if args.out:
        args.out.write_text(report + "\n", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

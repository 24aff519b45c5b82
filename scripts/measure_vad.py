"""Compare parla's speech detectors on Catalan espeak-ng clips with known silence and noise.

Each clip is an espeak-ng sentence (several voices) resampled to the prepare output rate, padded
with a random amount of silence on each side, with white, pink or brown noise (or hum + pink, or
pink plus a 5 ms click in the silence) added at a known SNR. The true speech span is where the
clean espeak signal first and last reaches -50 dB below its peak.

For each detector the script prints the boundary errors in ms (positive: the detector cut into
speech), how often a cut reaches past the 100 ms of kept silence (speech lost after trimming),
how often more than 200 ms of extra silence is left, clips with no detection, and speed.

    python scripts/measure_vad.py                  # all sentences x voices x noises
    python scripts/measure_vad.py --clips 40 --sample-rate 48000

Needs espeak-ng on PATH; silero is included when `silero-vad` (and torch) are importable.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from parla.conditioning.vad import (
    EnergySpeechDetector,
    SileroSpeechDetector,
    SpeechDetector,
    silero_available,
)

SENTENCES = [
    "Bon dia, com estàs?",
    "Fa fred als dies de vent forts.",
    "Sí, ho sé.",
    "Els peixos neden a prop de les roques.",
    "Xerrem una estona abans de sopar.",
    "La col·lecció del museu és molt antiga.",
    "Tots els dissabtes anem al mercat.",
    "Per què no vens amb nosaltres?",
    "Hi havia una vegada un rei molt savi.",
    "Cap a quina hora arriba el tren de Girona?",
    "Fes-ho com vulguis.",
    "Gràcies per tot.",
]
VOICES = ["ca", "ca+m3", "ca+f2", "ca+f4", "ca+m7"]
NOISES = [("clean", None), ("white", 30.0), ("pink", 20.0), ("white", 15.0), ("brown", 10.0),
          ("hum+pink", 20.0), ("click+pink", 25.0)]
TRUTH_BELOW_PEAK_DB = 50.0
KEEP_MS = 100.0


@dataclass
class Clip:
    samples: np.ndarray
    start: int  # true speech span
    end: int
    label: str


def synthesize(text: str, voice: str, folder: Path, rate: int) -> np.ndarray:
    path = folder / "s.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    samples, source_rate = sf.read(path, dtype="float32")
    return soxr.resample(samples, source_rate, rate).astype(np.float32)


def coloured_noise(kind: str, length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(length)
    if kind == "white":
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(length, 1.0 / rate)
    freqs[0] = freqs[1]
    if kind in ("pink", "hum+pink"):
        spectrum /= np.sqrt(freqs)
    elif kind == "brown":
        spectrum /= freqs
    noise = np.fft.irfft(spectrum, length)
    if kind == "hum+pink":
        t = np.arange(length) / rate
        noise = noise / noise.std() + 1.5 * np.sin(2 * np.pi * 50 * t) + 0.5 * np.sin(
            2 * np.pi * 150 * t)
    return noise


def make_clips(rate: int, limit: int | None, seed: int) -> list[Clip]:
    rng = np.random.default_rng(seed)
    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        combos = list(itertools.product(SENTENCES, VOICES))
        if limit:
            combos = combos[:limit]
        for text, voice in combos:
            speech = synthesize(text, voice, Path(tmp), rate)
            loud = np.flatnonzero(np.abs(speech) >= np.abs(speech).max()
                                  * 10 ** (-TRUTH_BELOW_PEAK_DB / 20))
            speech = speech[loud[0]: loud[-1] + 1]  # exact span, then known padding
            level = 10 ** (rng.uniform(-30, -10) / 20) / np.sqrt(np.mean(speech**2))
            speech = speech * level
            for kind, snr in NOISES:
                lead = int(rng.uniform(0.05, 1.5) * rate)
                tail = int(rng.uniform(0.05, 1.5) * rate)
                x = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
                if snr is not None:
                    noise = coloured_noise(kind, len(x), rate, rng)
                    speech_power = np.mean(speech.astype(np.float64) ** 2)
                    noise *= np.sqrt(speech_power / 10 ** (snr / 10) / np.mean(noise**2))
                    x = x + noise
                if kind.startswith("click"):
                    # A 5 ms button click / mic bump, 0.3-0.6 s before the speech (or after).
                    width = int(0.005 * rate)
                    where = lead - int(rng.uniform(0.3, 0.6) * rate) - width
                    if where < 0:
                        where = lead + len(speech) + int(rng.uniform(0.3, 0.6) * rate)
                    click = rng.standard_normal(width) * np.hanning(width) * np.abs(speech).max()
                    x = np.concatenate([x, np.zeros(max(0, where + width - len(x)))])
                    x[where: where + width] += click
                label = f"{kind}" + ("" if snr is None else f"@{snr:g}dB")
                clips.append(Clip(x.astype(np.float32), lead, lead + len(speech), label))
    return clips


def evaluate(detector: SpeechDetector, clips: list[Clip], rate: int) -> dict[str, dict]:
    keep = KEEP_MS / 1000 * rate
    rows: dict[str, list] = {}
    detector(clips[0].samples, rate)  # warm-up (model load, JIT, caches)
    for clip in clips:
        began = time.perf_counter()
        region = detector(clip.samples, rate)
        elapsed = time.perf_counter() - began
        rows.setdefault(clip.label, []).append((clip, region, elapsed))
        rows.setdefault("ALL", []).append((clip, region, elapsed))
    table = {}
    for label, items in rows.items():
        errors, cuts, slack, missed, seconds, audio = [], 0, 0, 0, 0.0, 0.0
        for clip, region, elapsed in items:
            seconds += elapsed
            audio += len(clip.samples) / rate
            if region is None:
                missed += 1
                continue
            start_err = (region[0] - clip.start) / rate * 1000  # >0: cut into the onset
            end_err = (clip.end - region[1]) / rate * 1000  # >0: cut into the ending
            errors += [start_err, end_err]
            cuts += (region[0] - keep > clip.start) + (region[1] + keep < clip.end)
            slack += (start_err < -200) + (end_err < -200)
        e = np.array(errors) if errors else np.array([np.nan])
        table[label] = {
            "clips": len(items),
            "median_ms": float(np.median(e)),
            "mean_abs_ms": float(np.mean(np.abs(e))),
            "p95_abs_ms": float(np.percentile(np.abs(e), 95)),
            "worst_cut_ms": float(np.max(e)),
            "lost_speech_%": 100 * cuts / (2 * len(items)),
            "slack_200ms_%": 100 * slack / (2 * len(items)),
            "missed": missed,
            "ms_per_clip": 1000 * seconds / len(items),
            "x_realtime": audio / seconds if seconds else float("inf"),
        }
    return table


def print_table(name: str, table: dict[str, dict]) -> None:
    columns = list(next(iter(table.values())).keys())
    print(f"\n== {name}")
    print(f"{'noise':<14}" + "".join(f"{c:>15}" for c in columns))
    for label, row in table.items():
        cells = "".join(f"{row[c]:>15.1f}" if isinstance(row[c], float) else f"{row[c]:>15}"
                        for c in columns)
        print(f"{label:<14}{cells}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-rate", type=int, default=24000)
    parser.add_argument("--clips", type=int, default=None,
                        help="number of sentence x voice pairs (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("espeak-ng not found on PATH", file=sys.stderr)
        return 1
    clips = make_clips(args.sample_rate, args.clips, args.seed)
    print(f"{len(clips)} clips at {args.sample_rate} Hz, truth at -{TRUTH_BELOW_PEAK_DB:g} dB "
          f"re peak, kept silence {KEEP_MS:g} ms")
    detectors: list[SpeechDetector] = [EnergySpeechDetector()]
    if silero_available():
        detectors.append(SileroSpeechDetector())
    else:
        print("silero-vad not importable: energy detector only")
    for detector in detectors:
        print_table(detector.name, evaluate(detector, clips, args.sample_rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())

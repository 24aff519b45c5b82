#!/usr/bin/env python3
"""DNSMOS cost per clip: speechmos's own ``dnsmos.run`` against parla's `DnsmosScorer`, side by
side in one run, on the same clips, pinned to one core.

  speechmos  ``speechmos.dnsmos.run(samples_16k, 16000)`` as called by default: SIG/BAK/OVRL and
             P.808 models per 9.01 s window, librosa mel spectrogram for P.808, onnxruntime's
             default threads (every core; here pinned to one, as one prepare worker would be).
  parla      ``parla.conditioning.dnsmos.DnsmosScorer()(samples_16k, 16000)``: the SIG/BAK/OVRL
             model only,
             one intra-op thread, one window per call.
  batched    parla's session given all of a clip's windows in one call (what parla does not do).

The clips are Catalan espeak-ng sentences (16 kHz) whose lengths span Common Voice's (about 2 to
10 s). Reported: seconds per clip (the least of the repeats, run interleaved), DNSMOS windows per
clip, the largest score difference between the two, and the start-up of each path in a fresh
interpreter (imports, session creation and the first clip).

Usage: python benchmarks/bench_dnsmos.py [--repeats 3] [--core 0]
Needs espeak-ng, the parla[quality] extra and librosa (speechmos's own run imports it).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SENTENCES = [
    "Bon dia.",
    "Avui fa un dia molt bonic.",
    "La plaça del poble és plena de gent que balla.",
    "Demà al matí anirem al mercat a comprar fruita, verdura i una mica de peix fresc.",
    "El tren de les vuit arriba amb retard perquè hi ha obres a la via, i tothom espera "
    "pacientment a l'andana.",
    "Quan era petit, el meu avi m'explicava històries de la guerra, del camp i de les "
    "festes majors del poble, que duraven tres dies sencers.",
]


def make_clips() -> list[np.ndarray]:
    from parla.audio.decode import resample

    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, text in enumerate(SENTENCES):
            wav = Path(tmp) / f"{index}.wav"
            subprocess.run(["espeak-ng", "-v", "ca+m3", "-s", "150", "-w", str(wav), text],
                           check=True, capture_output=True)
            samples, rate = sf.read(wav, dtype="float32")
            clips.append(np.clip(resample(samples * 0.8, rate, 16000), -1, 1))
    return clips


STARTUP = {
    "speechmos": "from speechmos import dnsmos; dnsmos.run(x, 16000)",
    "parla": "from parla.conditioning.dnsmos import DnsmosScorer; DnsmosScorer()(x, 16000)",
}


def startup_seconds(variant: str, core: int) -> float:
    code = (f"import os, time, numpy as np; os.sched_setaffinity(0, {{{core}}}); "
            "x = np.random.default_rng(0).normal(0, 0.05, 80000).astype(np.float32); "
            f"t = time.perf_counter(); {STARTUP[variant]}; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})

    import onnxruntime
    from speechmos import dnsmos

    from parla.conditioning.dnsmos import DnsmosScorer, calibrate, windows

    clips = make_clips()
    scorer = DnsmosScorer()
    dnsmos.run(clips[0], 16000)  # sessions built and librosa warmed before timing
    scorer(clips[0], 16000)
    variants = ("speechmos", "parla", "batched")
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    per_clip = []
    worst = 0.0
    for clip in clips:
        cut = windows(clip)
        row: dict = {"seconds": clip.size / 16000, "windows": len(cut)}
        spent: dict[str, list[float]] = {variant: [] for variant in variants}
        for _ in range(args.repeats):  # interleaved, so that both see the same machine load
            for variant in variants:
                started = time.perf_counter()
                if variant == "speechmos":
                    result = dnsmos.run(clip, 16000)
                    scores = (result["sig_mos"], result["bak_mos"], result["ovrl_mos"])
                elif variant == "parla":
                    result = scorer(clip, 16000)
                    scores = (result["dnsmos_sig"], result["dnsmos_bak"], result["dnsmos_ovrl"])
                else:
                    result = calibrate(scorer.session.run(None, {scorer.input_name: cut})[0])
                    scores = (result["dnsmos_sig"], result["dnsmos_bak"], result["dnsmos_ovrl"])
                spent[variant].append(time.perf_counter() - started)
                row[variant + "_scores"] = scores
        for variant in variants:
            row[variant] = min(spent[variant])  # the least disturbed run
            times[variant].append(row[variant])
        worst = max(worst, *(abs(a - b) for a, b in
                             zip(row["speechmos_scores"], row["parla_scores"], strict=True)))
        per_clip.append(row)

    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"pinned to core {args.core}; python {platform.python_version()}, onnxruntime "
          f"{onnxruntime.__version__}, numpy {np.__version__}")
    print("| clip (s) | windows | speechmos s/clip | parla s/clip | speed-up | all windows in "
          "one batch s/clip | OVRL |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in per_clip:
        print(f"| {row['seconds']:.1f} | {row['windows']} | {row['speechmos']:.3f} | "
              f"{row['parla']:.3f} | {row['speechmos'] / row['parla']:.2f}x | "
              f"{row['batched']:.3f} | {row['parla_scores'][2]:.3f} |")
    total_windows = sum(row["windows"] for row in per_clip)
    print("per window: " + ", ".join(f"{variant} {sum(times[variant]) / total_windows:.3f} s"
                                     for variant in variants))
    print(f"largest SIG/BAK/OVRL difference between the two: {worst:.2e}")
    for variant in ("speechmos", "parla"):
        print(f"start-up of {variant} (fresh interpreter: imports, sessions, first clip): "
              f"{startup_seconds(variant, args.core):.2f} s")


if __name__ == "__main__":
    main()

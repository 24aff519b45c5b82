#!/usr/bin/env python3
"""Compare this checkout's conditioning with another version's, clip by clip, on a corpus.

Every clip of a Common Voice-format folder (validated.tsv + clips/) is decoded and resampled
once (with this checkout's audio module) and conditioned by both versions with default options.
Reported: clips whose decision differs (kept vs rejected, or another reject reason), the largest
difference in trim bounds, in output loudness, and in SNR, how far this version's output is from
pyloudnorm's measure of it, and each version's CPU time per clip.

The other version is a source tree of the parla package, imported under another name, e.g. the
last commit before a change:

    git archive <commit> src | tar -x -C /tmp/ref
    PYTHONPATH=src python benchmarks/compare_conditioning.py --reference /tmp/ref/src/parla \\
        --corpus src/parla/demo/cv_ca_demo

With ``--decoders`` the comparison is of decoders instead: this checkout conditions every MP3
clip twice, decoded by libsndfile and resampled by soxr HQ (the reference, ``--resampler soxr``)
and decoded by libmpg123 straight to the rate (``--resampler mpg123``). The two waveforms are
also compared, on the same sample grid (libmpg123 down-samples before the gapless trim, so an odd
encoder delay puts its grid one 48 kHz sample earlier), and tones of known frequency are run
through both, which shows the two anti-alias filters:

    PYTHONPATH=src python benchmarks/compare_conditioning.py --decoders \
        --corpus src/parla/demo/cv_ca_demo

Exit status 1 when a decision differs or a tolerance is exceeded (trim bounds 10 ms, loudness
0.05 LU from the reference, 0.1 LU from pyloudnorm).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

TRIM_TOLERANCE_S = 0.010
LOUDNESS_TOLERANCE_LU = 0.05
PYLOUDNORM_TOLERANCE_LU = 0.1


def import_reference(package_dir: Path) -> Any:
    """The `conditioning` module of the parla package in `package_dir`, as `parla_reference`."""
    spec = importlib.util.spec_from_file_location(
        "parla_reference", package_dir / "__init__.py",
        submodule_search_locations=[str(package_dir)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"no parla package in {package_dir}")
    package = importlib.util.module_from_spec(spec)
    sys.modules["parla_reference"] = package
    spec.loader.exec_module(package)
    return importlib.import_module("parla_reference.conditioning")


def read_clips(corpus: Path, limit: int | None) -> list[tuple[str, str]]:
    """(file name, sentence) of the corpus's rows."""
    with open(corpus / "validated.tsv", encoding="utf-8", errors="replace", newline="") as handle:
        rows = [(row.get("path") or "", row.get("sentence") or "")
                for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return rows[:limit] if limit else rows


def run(module: Any, samples: Any, rate: int, text: str) -> tuple[dict[str, Any], Any, float]:
    """(measurements with "decision", output samples or None, CPU seconds) of one version."""
    from parla.options import ConditioningOptions

    options = ConditioningOptions()
    detector = module.make_speech_detector(options.vad)
    started = time.process_time()
    try:
        clip = module.condition_clip(samples, rate, text, options, detector)
    except module.ClipRejected as rejected:
        seconds = time.process_time() - started
        return {"decision": rejected.reason} | rejected.measurements, None, seconds
    seconds = time.process_time() - started
    return {"decision": "kept"} | clip.measurements, clip.samples, seconds


def trim_bounds(m: dict[str, Any]) -> tuple[float, float]:
    """(start, end) in seconds of the kept part of the input."""
    start = m["leading_silence_s_before"] - m["leading_silence_s_after"]
    end = m["duration_s_before"] - (m["trailing_silence_s_before"] - m["trailing_silence_s_after"])
    return start, end


def decode_both(data: bytes, rate: int) -> tuple[Any, Any, float]:
    """(libsndfile + soxr samples, libmpg123 samples, error between them in dB on one grid)."""
    import numpy as np

    from parla.audio import decode as audio

    full, source_rate = audio.decode_audio(data, "mp3")
    direct, direct_rate = audio.decode_audio(data, "mp3", mpg123_rate=rate)
    reference = audio.resample(full, source_rate, rate, "soxr")
    if direct_rate != rate or direct.size != reference.size:
        raise SystemExit(f"libmpg123 gave {direct.size} samples at {direct_rate} Hz, soxr "
                         f"{reference.size} at {rate} Hz")
    energy = float(np.sum(reference.astype(np.float64) ** 2))
    errors = []
    for shift in range(source_rate // rate):  # libmpg123's grid, earlier by `shift` samples
        shifted = reference if shift == 0 else audio.resample(
            np.concatenate([np.zeros(shift, np.float32), full])[:full.size], source_rate, rate,
            "soxr")
        errors.append(float(np.sum((shifted - direct).astype(np.float64) ** 2)) / energy)
    return reference, direct, 10 * math.log10(max(min(errors), 1e-30))


TONES_HZ = (1000, 5000, 10000, 11000, 11500, 11750, 12000, 12250, 12500, 13000, 15000)


def tone_levels(rate: int) -> list[tuple[int, float, float]]:
    """(frequency, level out of soxr, level out of libmpg123) in dB relative to the input tone,
    for 1 s tones at 48 kHz encoded as MP3 (libsndfile's LAME, its default quality)."""
    import io

    import numpy as np
    import soundfile as sf

    levels = []
    t = np.arange(48000) / 48000
    for frequency in TONES_HZ:
        tone = (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
        buffer = io.BytesIO()
        sf.write(buffer, tone, 48000, format="MP3")
        reference, direct, _ = decode_both(buffer.getvalue(), rate)
        middle = slice(rate // 10, -rate // 10)  # away from the edges' transients
        rms = float(np.sqrt(np.mean(tone.astype(np.float64) ** 2)))
        levels.append((frequency, *(20 * math.log10(max(float(np.sqrt(np.mean(
            x[middle].astype(np.float64) ** 2))), 1e-12) / rms) for x in (reference, direct))))
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path,
                        help="the other version's parla package folder (…/src/parla)")
    parser.add_argument("--decoders", action="store_true",
                        help="compare libsndfile + soxr with libmpg123 instead of two versions")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    parser.add_argument("--rate", type=int, default=24000, help="conditioning sample rate")
    args = parser.parse_args(argv)

    import pyloudnorm

    from parla.audio import decode as audio
    from parla.conditioning import policy as conditioning
    from parla.errors import RowRejected

    if args.decoders == (args.reference is not None):
        parser.error("give either --reference or --decoders")
    reference = conditioning if args.decoders else import_reference(args.reference.resolve())
    meter = pyloudnorm.Meter(args.rate)
    waveform_errors: list[float] = []
    trims_moved = 0  # clips whose trim bounds moved by more than the tolerance
    differing: list[str] = []
    worst = {"trim_s": 0.0, "lufs_vs_reference": 0.0, "lufs_vs_pyloudnorm": 0.0, "snr_db": 0.0}
    counts: dict[str, int] = {}
    cpu = {"reference": 0.0, "this": 0.0}
    conditioned = 0
    for name, sentence in read_clips(args.corpus, args.limit):
        try:
            data = (args.corpus / "clips" / name).read_bytes()
            if args.decoders:
                old_samples, samples, error_db = decode_both(data, args.rate)
                waveform_errors.append(error_db)
            else:
                samples, rate = audio.decode_audio(data, Path(name).suffix.lstrip(".") or None)
                old_samples = samples = audio.resample(samples, rate, args.rate)
        except (OSError, RowRejected):
            counts["not decoded"] = counts.get("not decoded", 0) + 1
            continue
        conditioned += 1
        old, _, old_s = run(reference, old_samples, args.rate, sentence)
        new, out, new_s = run(conditioning, samples, args.rate, sentence)
        cpu["reference"] += old_s
        cpu["this"] += new_s
        counts[new["decision"]] = counts.get(new["decision"], 0) + 1
        if old["decision"] != new["decision"]:
            differing.append(f"{name}: {old['decision']} -> {new['decision']}")
            continue
        if "snr_db" in old and "snr_db" in new and math.isfinite(old["snr_db"]):
            worst["snr_db"] = max(worst["snr_db"], abs(old["snr_db"] - new["snr_db"]))
        if out is None:
            continue
        old_bounds, new_bounds = trim_bounds(old), trim_bounds(new)
        moved = max(abs(a - b) for a, b in zip(old_bounds, new_bounds, strict=True))
        worst["trim_s"] = max(worst["trim_s"], moved)
        trims_moved += moved > TRIM_TOLERANCE_S
        worst["lufs_vs_reference"] = max(worst["lufs_vs_reference"],
                                         abs(old["lufs_after"] - new["lufs_after"]))
        block = min(0.4, (len(out) - 1) / args.rate)
        meter.block_size = block
        measured = meter.integrated_loudness(out.astype("float64"))
        worst["lufs_vs_pyloudnorm"] = max(worst["lufs_vs_pyloudnorm"],
                                          abs(measured - new["lufs_after"]))
    print(f"corpus {args.corpus}: {conditioned} clips conditioned; this version's decisions: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"decisions that differ from the reference: {len(differing)}")
    for line in differing[:20]:
        print(f"  {line}")
    print(f"largest trim-bound difference: {worst['trim_s'] * 1000:.2f} ms "
          f"(tolerance {TRIM_TOLERANCE_S * 1000:.0f} ms; {trims_moved} clips beyond it)")
    print(f"largest output-loudness difference from the reference: "
          f"{worst['lufs_vs_reference']:.4f} LU (tolerance {LOUDNESS_TOLERANCE_LU})")
    print(f"largest difference from pyloudnorm's measure of the output: "
          f"{worst['lufs_vs_pyloudnorm']:.4f} LU (tolerance {PYLOUDNORM_TOLERANCE_LU})")
    print(f"largest SNR difference: {worst['snr_db']:.2f} dB")
    if conditioned and not args.decoders:
        print(f"CPU per clip: reference {cpu['reference'] / conditioned * 1000:.2f} ms, "
              f"this {cpu['this'] / conditioned * 1000:.2f} ms")
    if waveform_errors:
        waveform_errors.sort()
        print(f"libmpg123 against libsndfile + soxr on one grid: error energy "
              f"{waveform_errors[len(waveform_errors) // 2]:.1f} dB of the signal's (median), "
              f"{waveform_errors[-1]:.1f} dB (worst)")
        print("tone levels, dB relative to the input (soxr HQ | libmpg123):")
        for frequency, soxr_db, mpg123_db in tone_levels(args.rate):
            print(f"  {frequency / 1000:6.1f} kHz  {soxr_db:8.2f} | {mpg123_db:8.2f}")
    failed = (differing or worst["trim_s"] > TRIM_TOLERANCE_S
              or worst["lufs_vs_reference"] > LOUDNESS_TOLERANCE_LU
              or worst["lufs_vs_pyloudnorm"] > PYLOUDNORM_TOLERANCE_LU)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

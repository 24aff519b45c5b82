"""TTS-grade clip conditioning: trim silence, normalise loudness, reject unusable clips.

Pure functions on mono float32 samples and a sample rate. `condition_clip` is the one entry point
the prepare worker calls per row; it raises `ClipRejected` (an `RowRejected`, so the worker
records it like any bad clip) with a short stable reason. `Conditioner` is the worker-level
wrapper that builds the speech detector once.

Speech detection has two backends. The energy detector (default install, numpy/scipy only) runs a
double-threshold end-point search on 10 ms frame levels, with thresholds set between the clip's
own noise floor and speech peak. The silero detector (optional `silero-vad` package, needs torch)
is imported lazily and only when asked for (`vad="silero"`, or `"auto"` when it is installed).
See scripts/measure_vad.py for how the two compare.

Each clip is analysed from a few shared intermediates, so conditioning costs little more than the
decode: one band-limited filter pass gives the 10 ms frame energies that the energy detector, the
speech level, the SNR and (through the detected span) the speaking rate all use; one K-weighting
pass (BS.1770 coefficients, `scipy.signal.sosfilt`) gives the gated loudness before and after
normalisation; true peaks are interpolated only around the samples that could reach the level
being checked. pyloudnorm and full 4x oversampling are the references in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from parla.conditioning.levels import (
    CLIP_LEVEL,
    SPEECH_BAND_HZ,
    clipped_fraction,
    estimate_snr_db,
    frame_powers,
    speech_frame_mask,
    to_db,
    trim_silence,
)
from parla.conditioning.loudness import k_weighted, loudness_of_weighted
from parla.conditioning.peaks import normalize_to_target, true_peak_db
from parla.conditioning.vad import EnergySpeechDetector, SpeechDetector, make_speech_detector
from parla.errors import RowRejected
from parla.options import ConditioningOptions
from parla.text import invalid_characters, normalize_sentence

MIN_SPEECH_DBFS = -55.0  # active speech quieter than this is a "too_quiet" clip


class ClipRejected(RowRejected):
    """A clip that decodes fine but is not fit for TTS training; `reason` is a stable snake_case
    name (clipped, no_speech, too_quiet, low_snr, speaking_rate_too_fast, ...)."""

    def __init__(
        self, reason: str, detail: str = "", measurements: dict[str, Any] | None = None
    ) -> None:
        super().__init__(reason, detail)
        self.measurements = dict(measurements or {})

    def __reduce__(self):  # keep reason/detail/measurements across process boundaries
        return (type(self), (self.reason, self.detail, self.measurements))


@dataclass(frozen=True)
class ConditionedClip:
    samples: np.ndarray  # float32 mono, trimmed and loudness-normalised
    sample_rate: int
    text: str  # normalised sentence (the input unchanged when normalize_text is off)
    measurements: dict[str, Any]

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


# --------------------------------------------------------------------------------------------
# Frame levels


# --------------------------------------------------------------------------------------------
# Speech detection


# --------------------------------------------------------------------------------------------
# Measurements


# --------------------------------------------------------------------------------------------
# Loudness (ITU-R BS.1770-4, one channel)


# --------------------------------------------------------------------------------------------
# True peak and the limiter


# --------------------------------------------------------------------------------------------
# Entry point


def _reject(reason: str, detail: str, measurements: dict[str, Any]) -> ClipRejected:
    return ClipRejected(reason, detail, measurements)


def needs_analysis(options: ConditioningOptions) -> bool:
    """Whether any audio rule is on; with none, conditioning only normalises the text."""
    return options.condition_audio and (
        options.trim_silence or options.loudness_norm
        or options.max_clipped_fraction is not None or options.min_snr_db is not None
        or options.min_chars_per_sec is not None or options.max_chars_per_sec is not None)


def condition_clip(
    samples: np.ndarray,
    sample_rate: int,
    text: str,
    options: ConditioningOptions | None = None,
    detector: SpeechDetector | None = None,
) -> ConditionedClip:
    """Normalise the text, check the clip, trim its silence and normalise its loudness.

    Raises ClipRejected (reasons: empty_text, foreign_characters, invalid_audio, clipped,
    no_speech, too_quiet, low_snr, speaking_rate_too_fast, speaking_rate_too_slow). Build
    `detector` once per worker (make_speech_detector); without one it is built here per call.
    Speaking rate is characters of the normalised sentence (spaces included) per second of the
    detected speech span (the kept silence is not counted).
    """
    options = options or ConditioningOptions()
    m: dict[str, Any] = {}

    if options.normalize_text:
        text = normalize_sentence(text)
    if not text.strip():
        raise _reject("empty_text", "no text left after normalisation", m)
    if options.reject_foreign_text:
        foreign = invalid_characters(text)
        if foreign:
            raise _reject("foreign_characters", "".join(sorted(foreign)), m)

    x = np.asarray(samples, dtype=np.float32)
    magnitude = np.abs(x)  # shared by the finiteness check and the clipping measure
    # (the largest |x| is NaN or infinite exactly when a sample is)
    if x.ndim != 1 or len(x) == 0 or not np.isfinite(peak := magnitude.max()):
        raise _reject("invalid_audio", f"expected finite mono samples, got shape {x.shape}", m)
    duration = len(x) / sample_rate
    m["duration_s_before"] = duration
    if not needs_analysis(options):  # every audio rule is off: pass the samples through
        m["duration_s_after"] = duration
        return ConditionedClip(samples=np.ascontiguousarray(x), sample_rate=sample_rate,
                               text=text, measurements=m)

    # none without a sample at the level: the count is skipped for almost every clip
    m["clipped_fraction"] = clipped = (
        clipped_fraction(x, magnitude) if peak >= CLIP_LEVEL else 0.0)
    if options.max_clipped_fraction is not None and clipped > options.max_clipped_fraction:
        raise _reject("clipped", f"{clipped:.4f} of samples at full scale "
                      f"(max {options.max_clipped_fraction})", m)

    detector = detector or make_speech_detector(options.vad)
    m["vad"] = detector.name
    # One set of frame energies for the detector, the speech level and the SNR.
    powers = frame_powers(x, sample_rate, SPEECH_BAND_HZ)
    if isinstance(detector, EnergySpeechDetector) and detector.highpass_hz == SPEECH_BAND_HZ:
        region = detector.region(powers, len(x), sample_rate)
    else:
        region = detector(x, sample_rate)
    if region is None:
        raise _reject("no_speech", f"{detector.name} detector found no speech", m)
    start, end = region
    speech_s = (end - start) / sample_rate
    m["speech_s"] = speech_s
    m["leading_silence_s_before"] = start / sample_rate
    m["trailing_silence_s_before"] = (len(x) - end) / sample_rate

    speech = speech_frame_mask(powers, region, sample_rate)
    if not speech.any():
        raise _reject("no_speech", "no active speech frames in the detected span", m)
    speech_level = float(to_db(powers[speech].mean()))
    m["speech_level_dbfs"] = speech_level
    if speech_level < MIN_SPEECH_DBFS:
        raise _reject("too_quiet", f"speech at {speech_level:.1f} dBFS (min {MIN_SPEECH_DBFS})", m)

    snr = estimate_snr_db(powers, speech)
    m["snr_db"] = snr
    if options.min_snr_db is not None and not snr >= options.min_snr_db:
        raise _reject("low_snr", f"{snr:.1f} dB (min {options.min_snr_db})", m)

    rate = len(text) / speech_s if speech_s > 0 else float("inf")
    m["chars_per_sec"] = rate
    if options.max_chars_per_sec is not None and rate > options.max_chars_per_sec:
        raise _reject("speaking_rate_too_fast",
                      f"{rate:.1f} chars/s (max {options.max_chars_per_sec})", m)
    if options.min_chars_per_sec is not None and rate < options.min_chars_per_sec:
        raise _reject("speaking_rate_too_slow",
                      f"{rate:.1f} chars/s (min {options.min_chars_per_sec})", m)

    if options.trim_silence:
        keep = round(sample_rate * options.keep_silence_ms / 1000.0)
        out_start = max(0, start - keep)
        out_end = min(len(x), end + keep)
        x = trim_silence(x, sample_rate, region, options.keep_silence_ms)
    else:
        out_start, out_end = 0, len(x)
    m["leading_silence_s_after"] = (start - out_start) / sample_rate
    m["trailing_silence_s_after"] = (out_end - end) / sample_rate

    weighted = k_weighted(x, sample_rate)  # the one K-weighting pass: loudness before and after
    lufs = loudness_of_weighted(weighted, sample_rate)
    m["lufs_before"] = lufs
    if not math.isfinite(lufs):
        raise _reject("too_quiet", "loudness below the -70 LUFS gate", m)
    if options.loudness_norm:
        x, m["lufs_after"], m["true_peak_db_after"] = normalize_to_target(
            x, sample_rate, options.target_lufs, options.true_peak_db, lufs, weighted)
    else:
        m["lufs_after"] = lufs
        m["true_peak_db_after"] = true_peak_db(x)
    m["duration_s_after"] = len(x) / sample_rate
    return ConditionedClip(samples=np.ascontiguousarray(x, dtype=np.float32),
                           sample_rate=sample_rate, text=text, measurements=m)


class Conditioner:
    """Worker-level state for conditioning: the speech detector is built (model loaded) once."""

    def __init__(self, options: ConditioningOptions | None = None,
                 detector: SpeechDetector | None = None) -> None:
        self.options = options or ConditioningOptions()
        # no detector (no model to load) when every audio rule is off
        self.detector = detector or (make_speech_detector(self.options.vad)
                                     if needs_analysis(self.options) else None)

    def __call__(self, samples: np.ndarray, sample_rate: int, text: str) -> ConditionedClip:
        return condition_clip(samples, sample_rate, text, self.options, self.detector)

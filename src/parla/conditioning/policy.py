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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parla.conditioning.levels import (
    CLIP_LEVEL,
    SPEECH_BAND_HZ,
    Region,
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
from parla.text import TextRules, rules_for

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
    language: str | None = "ca",
) -> ConditionedClip:
    """Normalise the text, check the clip, trim its silence and normalise its loudness.

    Raises ClipRejected (reasons: empty_text, foreign_characters, invalid_audio, clipped,
    no_speech, too_quiet, low_snr, speaking_rate_too_fast, speaking_rate_too_slow). Build
    `detector` once per worker (make_speech_detector); without one it is built here per call.
    Speaking rate is characters of the normalised sentence (spaces included) per second of the
    detected speech span (the kept silence is not counted). The text rules are the
    ``language``'s (`parla.text.rules_for`: Catalan's for ``ca``, a safe default otherwise).
    """
    clip = _Clip(np.asarray(samples, dtype=np.float32), sample_rate, text,
                 options or ConditioningOptions(), detector, rules=rules_for(language))
    for rule in _TEXT_AND_SAMPLE_RULES:
        rule(clip)
    if needs_analysis(clip.options):
        for rule in _AUDIO_RULES:
            rule(clip)
    clip.m["duration_s_after"] = len(clip.x) / sample_rate
    return ConditionedClip(samples=np.ascontiguousarray(clip.x, dtype=np.float32),
                           sample_rate=sample_rate, text=clip.text, measurements=clip.m)


@dataclass
class _Clip:
    """A clip on its way through the rules: its samples, its text and what was measured, plus
    the intermediates the later rules share (one filter pass each)."""

    x: np.ndarray
    sample_rate: int
    text: str
    options: ConditioningOptions
    detector: SpeechDetector | None
    m: dict[str, Any] = field(default_factory=dict)
    magnitude: np.ndarray | None = None  # |x|: the finiteness check and the clipping measure
    peak: float = 0.0
    powers: np.ndarray | None = None  # 10 ms frame energies above the speech band
    region: Region = (0, 0)  # the detected speech span, in samples
    speech: np.ndarray | None = None  # the active speech frames inside it
    rules: TextRules = field(default_factory=lambda: rules_for("ca"))

    def reject(self, reason: str, detail: str) -> ClipRejected:
        return ClipRejected(reason, detail, self.m)


def _text_rule(clip: _Clip) -> None:
    if clip.options.normalize_text:
        clip.text = clip.rules.normalize(clip.text)
    if not clip.text.strip():
        raise clip.reject("empty_text", "no text left after normalisation")
    if clip.options.reject_foreign_text:
        foreign = clip.rules.invalid_characters(clip.text)
        if foreign:
            raise clip.reject("foreign_characters", "".join(sorted(foreign)))


def _samples_rule(clip: _Clip) -> None:
    x = clip.x
    clip.magnitude = np.abs(x)
    # (the largest |x| is NaN or infinite exactly when a sample is)
    if x.ndim != 1 or len(x) == 0 or not np.isfinite(peak := clip.magnitude.max()):
        raise clip.reject("invalid_audio", f"expected finite mono samples, got shape {x.shape}")
    clip.peak = float(peak)
    clip.m["duration_s_before"] = len(x) / clip.sample_rate


def _clipping_rule(clip: _Clip) -> None:
    # none without a sample at the level: the count is skipped for almost every clip
    clipped = clipped_fraction(clip.x, clip.magnitude) if clip.peak >= CLIP_LEVEL else 0.0
    clip.m["clipped_fraction"] = clipped
    limit = clip.options.max_clipped_fraction
    if limit is not None and clipped > limit:
        raise clip.reject("clipped", f"{clipped:.4f} of samples at full scale (max {limit})")


def _speech_rule(clip: _Clip) -> None:
    x, rate = clip.x, clip.sample_rate
    detector = clip.detector or make_speech_detector(clip.options.vad)
    clip.m["vad"] = detector.name
    # One set of frame energies for the detector, the speech level and the SNR.
    clip.powers = frame_powers(x, rate, SPEECH_BAND_HZ)
    if isinstance(detector, EnergySpeechDetector) and detector.highpass_hz == SPEECH_BAND_HZ:
        region = detector.region(clip.powers, len(x), rate)
    else:
        region = detector(x, rate)
    if region is None:
        raise clip.reject("no_speech", f"{detector.name} detector found no speech")
    clip.region = start, end = region
    clip.m["speech_s"] = (end - start) / rate
    clip.m["leading_silence_s_before"] = start / rate
    clip.m["trailing_silence_s_before"] = (len(x) - end) / rate
    clip.speech = speech_frame_mask(clip.powers, region, rate)
    if not clip.speech.any():
        raise clip.reject("no_speech", "no active speech frames in the detected span")


def _speech_level_rule(clip: _Clip) -> None:
    speech_level = float(to_db(clip.powers[clip.speech].mean()))
    clip.m["speech_level_dbfs"] = speech_level
    if speech_level < MIN_SPEECH_DBFS:
        raise clip.reject("too_quiet", f"speech at {speech_level:.1f} dBFS "
                          f"(min {MIN_SPEECH_DBFS})")


def _snr_rule(clip: _Clip) -> None:
    snr = estimate_snr_db(clip.powers, clip.speech)
    clip.m["snr_db"] = snr
    minimum = clip.options.min_snr_db
    if minimum is not None and not snr >= minimum:
        raise clip.reject("low_snr", f"{snr:.1f} dB (min {minimum})")


def _speaking_rate_rule(clip: _Clip) -> None:
    speech_s, options = clip.m["speech_s"], clip.options
    rate = len(clip.text) / speech_s if speech_s > 0 else float("inf")
    clip.m["chars_per_sec"] = rate
    if options.max_chars_per_sec is not None and rate > options.max_chars_per_sec:
        raise clip.reject("speaking_rate_too_fast",
                          f"{rate:.1f} chars/s (max {options.max_chars_per_sec})")
    if options.min_chars_per_sec is not None and rate < options.min_chars_per_sec:
        raise clip.reject("speaking_rate_too_slow",
                          f"{rate:.1f} chars/s (min {options.min_chars_per_sec})")


def _trim_rule(clip: _Clip) -> None:
    (start, end), rate, length = clip.region, clip.sample_rate, len(clip.x)
    if clip.options.trim_silence:
        keep = round(rate * clip.options.keep_silence_ms / 1000.0)
        out_start, out_end = max(0, start - keep), min(length, end + keep)
        clip.x = trim_silence(clip.x, rate, clip.region, clip.options.keep_silence_ms)
    else:
        out_start, out_end = 0, length
    clip.m["leading_silence_s_after"] = (start - out_start) / rate
    clip.m["trailing_silence_s_after"] = (out_end - end) / rate


def _loudness_rule(clip: _Clip) -> None:
    x, rate, options = clip.x, clip.sample_rate, clip.options
    weighted = k_weighted(x, rate)  # the one K-weighting pass: loudness before and after
    lufs = loudness_of_weighted(weighted, rate)
    clip.m["lufs_before"] = lufs
    if not math.isfinite(lufs):
        raise clip.reject("too_quiet", "loudness below the -70 LUFS gate")
    if options.loudness_norm:
        clip.x, clip.m["lufs_after"], clip.m["true_peak_db_after"] = normalize_to_target(
            x, rate, options.target_lufs, options.true_peak_db, lufs, weighted)
    else:
        clip.m["lufs_after"] = lufs
        clip.m["true_peak_db_after"] = true_peak_db(x)


# The rules in the order they run; each measures into clip.m and may reject. The audio rules run
# only when one of them is on (`needs_analysis`); otherwise the samples pass through unchanged.
_TEXT_AND_SAMPLE_RULES: tuple[Callable[[_Clip], None], ...] = (_text_rule, _samples_rule)
_AUDIO_RULES: tuple[Callable[[_Clip], None], ...] = (
    _clipping_rule, _speech_rule, _speech_level_rule, _snr_rule, _speaking_rate_rule,
    _trim_rule, _loudness_rule)


class Conditioner:
    """Worker-level state for conditioning: the speech detector is built (model loaded) once."""

    def __init__(self, options: ConditioningOptions | None = None,
                 detector: SpeechDetector | None = None, language: str | None = "ca") -> None:
        self.options = options or ConditioningOptions()
        self.language = language  # whose text rules apply (`parla.text.rules_for`)
        # no detector (no model to load) when every audio rule is off
        self.detector = detector or (make_speech_detector(self.options.vad)
                                     if needs_analysis(self.options) else None)

    def __call__(self, samples: np.ndarray, sample_rate: int, text: str) -> ConditionedClip:
        return condition_clip(samples, sample_rate, text, self.options, self.detector,
                              self.language)

"""Speech detectors: where a clip's speech starts and ends. `EnergySpeechDetector` (frame levels
against the clip's own noise floor, the default) and `SileroSpeechDetector` (silero-vad, loaded
lazily with torch); `resolve_vad` says which ``auto`` means here."""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from parla.conditioning.levels import FRAME_S, Region, frame_hop, frame_powers, percentiles, to_db
from parla.errors import UsageError


class SpeechDetector(Protocol):
    """Finds the span from the first to the last speech sample, or None when there is none."""

    name: str

    def __call__(self, samples: np.ndarray, sample_rate: int) -> Region | None: ...


def _true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of True in a boolean array, ends exclusive."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.view(np.int8), [0]])))
    return edges[0::2], edges[1::2]


@dataclass(frozen=True)
class EnergySpeechDetector:
    """Double-threshold end-point detector on 10 ms frame levels (numpy only, no torch).

    Levels are taken above 250 Hz, where voiced speech keeps most of its energy and hum, rumble
    and traffic noise have little. The noise floor is a low percentile of the levels, its spread
    the distance to a lower one, the peak the loudest 30 ms. Segments are runs of the 30 ms-smoothed
    level above the low threshold, joined across gaps up to `max_gap_s` (stop closures before a
    final -ts, -ps); a segment is speech when it holds a "core" of at least `min_core_s` above the
    high threshold (an isolated click is shorter). The span runs from the first speech segment to
    the last, plus `end_hangover_s` at the end, where espeak and human speech alike fade out
    slowly below the noise. Defaults were tuned with scripts/measure_vad.py.
    """

    name: str = "energy"
    highpass_hz: float = 250.0
    floor_percentile: float = 10.0
    spread_percentile: float = 2.0  # floor minus this percentile: how much the noise varies
    high_fraction: float = 0.45  # high threshold: this fraction of the way from floor to peak,
    high_min_db: float = 6.0  # at least this far above the floor,
    high_below_peak_db: float = 35.0  # and at most this far below the peak
    low_spread_factor: float = 4.0  # low threshold: this many noise spreads above the floor,
    low_min_db: float = 2.0  # at least this far above the floor,
    low_below_peak_db: float = 55.0  # and at most this far below the peak
    min_dynamic_db: float = 8.0  # peak less than this above the floor: no speech, only noise
    min_core_s: float = 0.04
    max_gap_s: float = 0.1
    end_hangover_s: float = 0.05

    def __call__(self, samples: np.ndarray, sample_rate: int) -> Region | None:
        return self.region(frame_powers(samples, sample_rate, self.highpass_hz), len(samples),
                           sample_rate)

    def region(self, powers: np.ndarray, length: int, sample_rate: int) -> Region | None:
        """The speech span from frame powers already taken above `highpass_hz` (frame_powers)
        of a clip of `length` samples."""
        if len(powers) == 0:
            return None
        levels = to_db(powers)
        # 30 ms moving average in dB, edges repeated (zero padding would read as 0 dBFS).
        padded = np.concatenate([levels[:1], levels, levels[-1:]])
        smooth = (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0
        floor, floor_low = percentiles(smooth, (self.floor_percentile, self.spread_percentile))
        spread = floor - floor_low
        peak = float(smooth.max())
        dynamic = peak - floor
        if dynamic < self.min_dynamic_db:
            return None
        high = max(floor + max(self.high_min_db, self.high_fraction * dynamic),
                   peak - self.high_below_peak_db)
        low = max(floor + max(self.low_min_db, self.low_spread_factor * spread),
                  peak - self.low_below_peak_db)
        low = min(low, high)

        # Segments: runs above the low threshold, joined across gaps up to max_gap_s.
        starts, ends = _true_runs(smooth > low)
        if len(starts) == 0:
            return None
        joined = np.concatenate([[True], starts[1:] - ends[:-1] > round(self.max_gap_s / FRAME_S)])
        seg_starts = starts[joined]
        seg_ends = ends[np.concatenate([joined[1:], [True]])]
        # A segment is speech when it holds a core: min_core_s above the high threshold.
        core_starts, core_ends = _true_runs(smooth > high)
        core_starts = core_starts[core_ends - core_starts >= round(self.min_core_s / FRAME_S)]
        if len(core_starts) == 0:
            return None
        speech_segments = np.searchsorted(seg_starts, core_starts, side="right") - 1
        start_frame = int(seg_starts[speech_segments[0]])
        end_frame = int(seg_ends[speech_segments[-1]]) + round(self.end_hangover_s / FRAME_S)
        hop = frame_hop(sample_rate)
        return start_frame * hop, min(end_frame * hop, length)


class SileroSpeechDetector:
    """Silero VAD (optional `silero-vad` package; its wheel carries the model, so it works
    offline). Build once per worker: loading the model takes about a second."""

    name = "silero"
    model_rate = 16000

    def __init__(
        self, threshold: float = 0.5, min_speech_s: float = 0.1, num_threads: int | None = 1
    ) -> None:
        try:
            from silero_vad import get_speech_timestamps, load_silero_vad
        except ImportError as error:
            raise UsageError(
                "--vad silero needs the silero-vad package (pip install silero-vad)"
            ) from error
        import torch  # present: silero_vad imports it
        if num_threads:
            # One prepare worker per core: torch's own thread pool would oversubscribe them.
            torch.set_num_threads(num_threads)
        self._torch = torch
        self._get_speech_timestamps = get_speech_timestamps
        with warnings.catch_warnings():  # the package's own importlib/jit deprecations
            warnings.simplefilter("ignore", DeprecationWarning)
            self._model = load_silero_vad()
        self.threshold = threshold
        self.min_speech_s = min_speech_s

    def __call__(self, samples: np.ndarray, sample_rate: int) -> Region | None:
        import soxr

        x = np.asarray(samples, dtype=np.float32)
        if sample_rate != self.model_rate:
            x = soxr.resample(x, sample_rate, self.model_rate).astype(np.float32)
        with self._torch.inference_mode():
            stamps = self._get_speech_timestamps(
                self._torch.from_numpy(np.ascontiguousarray(x)),
                self._model,
                threshold=self.threshold,
                sampling_rate=self.model_rate,
                min_speech_duration_ms=int(self.min_speech_s * 1000),
                speech_pad_ms=0,  # keep_silence_ms is added by trim_silence
            )
        if not stamps:
            return None
        scale = sample_rate / self.model_rate
        start = int(math.floor(stamps[0]["start"] * scale))
        end = min(int(math.ceil(stamps[-1]["end"] * scale)), len(samples))
        return (start, end) if end > start else None


def silero_available() -> bool:
    """True when silero-vad and torch can be imported (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("silero_vad", "torch"))


def resolve_vad(vad: str) -> str:
    """``auto`` is ``silero`` where silero-vad and torch are installed, else ``energy``."""
    if vad != "auto":
        return vad
    return "silero" if silero_available() else "energy"


def make_speech_detector(vad: str = "auto") -> SpeechDetector:
    """Build the detector named by ConditioningOptions.vad (auto: `resolve_vad`)."""
    vad = resolve_vad(vad)
    if vad == "energy":
        return EnergySpeechDetector()
    if vad == "silero":
        return SileroSpeechDetector()
    raise UsageError(f"unknown VAD backend {vad!r}")


def detect_speech(
    samples: np.ndarray, sample_rate: int, detector: SpeechDetector | str = "energy"
) -> Region | None:
    """(start, end) sample indices from the first to the last speech sample, or None.

    Pass a detector built once (make_speech_detector) when calling per clip: a name builds a new
    one each call, which for silero reloads the model.
    """
    if isinstance(detector, str):
        detector = make_speech_detector(detector)
    return detector(samples, sample_rate)

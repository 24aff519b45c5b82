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

import functools
import importlib.util
import math
import warnings
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from parla.errors import RowRejected, UsageError
from parla.options import ConditioningOptions
from parla.text import invalid_characters, normalize_sentence

FRAME_S = 0.010  # frame hop and length for levels: 10 ms resolution on speech boundaries
FLOOR_DB = -100.0  # level given to digital silence, so logs stay finite
CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample
MIN_SPEECH_DBFS = -55.0  # active speech quieter than this is a "too_quiet" clip
MAX_SNR_DB = 100.0  # SNR is clipped to +-this (digitally silent pauses would give infinity)
FADE_S = 0.005  # raised-cosine fade at trim points so cuts through background noise do not click
LIMITER_WINDOW_S = 0.005  # half-width of the peak limiter's gain smoothing
TRUE_PEAK_OVERSAMPLING = 4
LOUDNESS_BLOCK_S = 0.4  # BS.1770 gating block
# Frame energies are taken above this: voiced speech keeps most of its energy there, while hum,
# rumble, traffic noise and DC have little. The detector, the speech level and the SNR share them.
SPEECH_BAND_HZ = 250.0

Region = tuple[int, int]


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


@functools.lru_cache(maxsize=16)
def _highpass_sos(sample_rate: int, cutoff_hz: float) -> np.ndarray:
    from scipy.signal import butter

    return butter(2, cutoff_hz, btype="highpass", fs=sample_rate, output="sos")


def frame_powers(
    samples: np.ndarray, sample_rate: int, highpass_hz: float | None = SPEECH_BAND_HZ
) -> np.ndarray:
    """Mean power of consecutive 10 ms frames (the last one partial), float64.

    With `highpass_hz`, everything below it is removed first (a second-order Butterworth; 250 Hz
    by default, the band the detector, the speech level and the SNR are measured in).
    """
    x = np.asarray(samples)
    if highpass_hz and len(x) > 12:
        from scipy.signal import sosfilt

        # float64 out whatever comes in (the coefficients are float64); sosfilt copies anyway
        x = sosfilt(_highpass_sos(sample_rate, highpass_hz), x)
    else:
        x = x.astype(np.float64, copy=False)
    hop = max(1, round(sample_rate * FRAME_S))
    full = len(x) // hop
    frames = x[: full * hop].reshape(full, hop)
    powers = np.einsum("ij,ij->i", frames, frames) / hop  # one pass, no array of squares
    if len(x) > full * hop:
        rest = x[full * hop :]
        powers = np.append(powers, float(np.dot(rest, rest)) / len(rest))
    return powers


def _percentiles(values: np.ndarray, percents: tuple[float, ...]) -> list[float]:
    """np.percentile(values, percents) (its default linear method, bit for bit), without its
    per-call overhead, which is most of the cost on a clip's few hundred frames."""
    ordered = np.sort(values)
    last = len(ordered) - 1
    result = []
    for percent in percents:
        index = (percent / 100) * last
        below = math.floor(index)
        fraction = index - below
        low, high = ordered[below], ordered[min(below + 1, last)]
        step = high - low
        # numpy's _lerp: from the nearer end, so the result is monotonic in the fraction
        result.append(float(high - step * (1 - fraction) if fraction >= 0.5
                            else low + step * fraction))
    return result


def _to_db(power: np.ndarray | float) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power, 10.0 ** (FLOOR_DB / 10.0)))


def _frame_hop(sample_rate: int) -> int:
    return max(1, round(sample_rate * FRAME_S))


# --------------------------------------------------------------------------------------------
# Speech detection


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
        levels = _to_db(powers)
        # 30 ms moving average in dB, edges repeated (zero padding would read as 0 dBFS).
        padded = np.concatenate([levels[:1], levels, levels[-1:]])
        smooth = (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0
        floor, floor_low = _percentiles(smooth, (self.floor_percentile, self.spread_percentile))
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
        hop = _frame_hop(sample_rate)
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


# --------------------------------------------------------------------------------------------
# Measurements


def clipped_fraction(samples: np.ndarray, magnitude: np.ndarray | None = None) -> float:
    """Fraction of samples at full scale (|x| >= 0.999); measure before any gain. `magnitude`
    is |samples| when already taken."""
    if len(samples) == 0:
        return 0.0
    magnitude = np.abs(samples) if magnitude is None else magnitude
    return float(np.count_nonzero(magnitude >= CLIP_LEVEL)) / len(samples)


def estimate_snr_db(powers: np.ndarray, speech_frames: np.ndarray) -> float:
    """Speech-to-noise ratio from frame powers: mean power of speech frames (less the noise in
    them) over mean power of non-speech frames. `speech_frames` is a boolean mask; without any
    non-speech frame the quietest tenth of frames stands for the noise floor."""
    if len(powers) == 0 or not speech_frames.any():
        return float("nan")
    noise = powers[~speech_frames]
    if len(noise) == 0:
        noise = np.sort(powers)[: max(1, len(powers) // 10)]
    noise_power = max(float(noise.mean()), 10.0 ** (FLOOR_DB / 10.0))
    speech_power = float(powers[speech_frames].mean())
    clean_power = speech_power - noise_power
    if clean_power <= 0:
        return -MAX_SNR_DB
    return min(max(10.0 * math.log10(clean_power / noise_power), -MAX_SNR_DB), MAX_SNR_DB)


def speech_frame_mask(powers: np.ndarray, region: Region, sample_rate: int) -> np.ndarray:
    """Frames inside `region` that are well above the clip's quiet frames: the active speech.

    Pauses inside the sentence count as non-speech, so that clips with no leading or trailing
    silence still have a noise estimate.
    """
    hop = _frame_hop(sample_rate)
    mask = np.zeros(len(powers), dtype=bool)
    first, last = region[0] // hop, max(region[0] // hop + 1, -(-region[1] // hop))
    mask[first:last] = True
    levels = _to_db(powers)
    inside = levels[first:last]
    if len(inside):
        # Inside the span, frames within 6 dB of the noise floor are pauses, not speech.
        floor = _percentiles(levels, (10.0,))[0]
        peak = float(inside.max())
        mask[first:last] = inside > min(floor + 6.0, peak - 1.0)
    return mask


def trim_silence(
    samples: np.ndarray, sample_rate: int, region: Region, keep_silence_ms: float = 100.0
) -> np.ndarray:
    """Cut to `region` plus `keep_silence_ms` either side (within the clip), fading the cut ends
    over at most 5 ms of the kept silence so cuts through background noise do not click."""
    keep = round(sample_rate * keep_silence_ms / 1000.0)
    start = max(0, region[0] - keep)
    end = min(len(samples), region[1] + keep)
    out = np.array(samples[start:end], dtype=np.float32)
    fade_in = min(round(sample_rate * FADE_S), region[0] - start, len(out))
    fade_out = min(round(sample_rate * FADE_S), end - region[1], len(out))
    if start > 0 and fade_in > 0:
        out[:fade_in] *= _fade(fade_in)
    if end < len(samples) and fade_out > 0:
        out[-fade_out:] *= _fade(fade_out)[::-1]
    return out


@functools.lru_cache(maxsize=16)
def _fade(length: int) -> np.ndarray:
    fade = (0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 0.5) / length)).astype(np.float32)
    fade.flags.writeable = False  # shared by every clip
    return fade


# --------------------------------------------------------------------------------------------
# Loudness (ITU-R BS.1770-4, one channel)

K_WEIGHTING_TAIL_S = 0.12  # the K-weighting rings below 1e-12 of its peak within 0.11 s


@functools.lru_cache(maxsize=16)
def _k_weighting_sos(sample_rate: int) -> np.ndarray:
    """BS.1770's K-weighting at `sample_rate` as two second-order sections: the +4 dB high shelf
    (the head) and the 38 Hz RLB high-pass. Designed as RBJ biquads, as pyloudnorm designs them,
    so that both meters agree at any rate (the standard only tabulates 48 kHz)."""
    sections = []
    for gain_db, q, cutoff_hz, kind in ((4.0, 1 / math.sqrt(2), 1500.0, "shelf"),
                                        (0.0, 0.5, 38.0, "highpass")):
        a = 10.0 ** (gain_db / 40.0)
        w0 = 2.0 * math.pi * cutoff_hz / sample_rate
        alpha = math.sin(w0) / (2.0 * q)
        cos = math.cos(w0)
        if kind == "shelf":
            root = 2.0 * math.sqrt(a) * alpha
            b = (a * ((a + 1) + (a - 1) * cos + root), -2 * a * ((a - 1) + (a + 1) * cos),
                 a * ((a + 1) + (a - 1) * cos - root))
            den = ((a + 1) - (a - 1) * cos + root, 2 * ((a - 1) - (a + 1) * cos),
                   (a + 1) - (a - 1) * cos - root)
        else:
            b = ((1 + cos) / 2, -(1 + cos), (1 + cos) / 2)
            den = (1 + alpha, -2 * cos, 1 - alpha)
        sections.append([value / den[0] for value in (*b, *den)])
    return np.array(sections)


def k_weighted(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """The K-weighted signal (float64): what BS.1770 measures the energy of."""
    from scipy.signal import sosfilt

    x = np.asarray(samples)
    if x.dtype != np.float32:  # float32 is filtered in float64 as it is; sosfilt copies anyway
        x = x.astype(np.float64, copy=False)
    return sosfilt(_k_weighting_sos(sample_rate), x)


def _gating_block_s(length: int, sample_rate: int) -> float | None:
    """The gating block for a clip of `length` samples: 400 ms, or the whole clip less one sample
    when it is shorter (len / rate * rate can exceed len by a rounding error); None when the clip
    is too short to measure."""
    if length < 2:
        return None
    block = min(LOUDNESS_BLOCK_S, (length - 1) / sample_rate)
    return block if length >= block * sample_rate else None


@functools.lru_cache(maxsize=64)
def _gating_plan(length: int, sample_rate: int, block_s: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Where gated_loudness sums: (segment starts, and per block the prefix-sum index of its
    first and past-its-last segment), or None for no block. The limiter's rounds measure clips
    of one length again, so the plan is kept."""
    step = 1.0 - 0.75
    blocks = int(np.round((length / sample_rate - block_s) / (block_s * step))) + 1
    if blocks < 1:
        return None
    index = np.arange(blocks)
    lower = np.minimum((block_s * (index * step) * sample_rate).astype(np.int64), length)
    upper = np.minimum((block_s * (index * step + 1) * sample_rate).astype(np.int64), length)
    # Every block is a run of the segments between consecutive block edges: sum each segment once
    edges = np.unique(np.concatenate([[0], lower, upper]))
    inner = edges[edges < length]
    positions = np.append(inner, length)
    plan = (inner, np.searchsorted(positions, lower), np.searchsorted(positions, upper))
    for array in plan:
        array.flags.writeable = False  # shared by every call for this length
    return plan


def gated_loudness(weighted: np.ndarray, sample_rate: int, block_s: float = LOUDNESS_BLOCK_S
                   ) -> float:
    """Integrated loudness (LUFS) of a K-weighted signal: mean-square energy of `block_s` blocks
    at 75 % overlap, the -70 LUFS absolute gate, then the relative gate 10 LU below the mean of
    what passed. Blocks are placed exactly as pyloudnorm places them. -inf for silence."""
    plan = _gating_plan(len(weighted), sample_rate, block_s)
    if plan is None:
        return float("-inf")
    inner, first, past = plan
    prefix = np.concatenate([[0.0], np.cumsum(np.add.reduceat(weighted * weighted, inner))])
    energy = (prefix[past] - prefix[first]) / (block_s * sample_rate)
    with np.errstate(divide="ignore"):
        levels = -0.691 + 10.0 * np.log10(energy)
    passed = levels >= -70.0
    if not passed.any():
        return float("-inf")
    relative = -0.691 + 10.0 * math.log10(float(energy[passed].mean())) - 10.0
    gated = (levels > relative) & passed
    if not gated.any():
        return float("-inf")
    mean = float(energy[gated].mean())
    return -0.691 + 10.0 * math.log10(mean) if mean > 0 else float("-inf")


def _loudness_of_weighted(weighted: np.ndarray, sample_rate: int) -> float:
    block = _gating_block_s(len(weighted), sample_rate)
    if block is None:
        return float("-inf")
    lufs = gated_loudness(weighted, sample_rate, block)
    return lufs if math.isfinite(lufs) else float("-inf")


def measure_loudness(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4: K-weighting, 400 ms blocks, both gates);
    -inf for silence. Clips shorter than one gating block are measured as a single block.
    Agrees with pyloudnorm's meter to ~1e-9 LU (the reference in tests/test_conditioning.py)."""
    return _loudness_of_weighted(k_weighted(samples, sample_rate), sample_rate)


# --------------------------------------------------------------------------------------------
# True peak and the limiter


@functools.lru_cache(maxsize=1)
def _interpolation_matrix() -> tuple[np.ndarray, float]:
    """(T, bound): the 4 oversampled values nearest input sample n are x[n-6 ... n+6] @ T, and
    none of them exceeds `bound` times the largest |x| in that 13-sample window."""
    from scipy.signal import firwin

    # 48-tap low-pass at the original Nyquist: the length BS.1770-4 Annex 2 uses for 4x.
    factor = TRUE_PEAK_OVERSAMPLING
    h = firwin(12 * factor, 0.95 / factor, window=("kaiser", 5.0)) * factor
    first = (len(h) - 1) // 2 - 1  # the filter's delay, less half an output sample
    matrix = np.zeros((13, factor))
    for row, d in enumerate(range(6, -7, -1)):  # row 0 multiplies x[n-6], row 12 x[n+6]
        for q in range(factor):
            tap = factor * d + first + q
            if 0 <= tap < len(h):
                matrix[row, q] = h[tap]
    return matrix, float(np.abs(matrix).sum(axis=0).max())


def _at_least(magnitude: np.ndarray, threshold: float) -> np.ndarray:
    """magnitude >= threshold as real numbers, also for float32 `magnitude` (where numpy would
    round a Python float threshold to float32 first): the smallest float32 not below it."""
    if magnitude.dtype == np.float32:
        rounded = np.float32(threshold)
        if float(rounded) < threshold:
            rounded = np.nextafter(rounded, np.float32(np.inf))
        return magnitude >= rounded
    return magnitude >= threshold


def _near(hot: np.ndarray, length: int) -> np.ndarray:
    """The sorted indices in [0, length) within 6 samples of one of the sorted indices `hot`:
    the windows around them, merged where they overlap or touch, each run one arange."""
    apart = np.diff(hot) > 13
    firsts = hot[np.concatenate(([True], apart))]
    lasts = hot[np.concatenate((apart, [True]))]
    lows = np.maximum(firsts - 6, 0)
    lengths = np.minimum(lasts + 7, length) - lows
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1])) + np.repeat(lows - (ends - lengths), lengths)


def _interpolated_peaks(x: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The largest |4x-oversampled value| around each of the samples `candidates` of `x` (float32
    or float64, computed in float64), zeros taken beyond the ends."""
    matrix, _ = _interpolation_matrix()
    taps = np.arange(-6, 7)
    length = len(x)
    peaks = np.empty(len(candidates))
    for first in range(0, len(candidates), 65536):  # bounded memory
        chunk = candidates[first:first + 65536]
        # x[n-6 ... n+6] (np.take: several times faster than indexing with a 2-d array), zero
        # beyond the ends: only the first and last few rows can reach past them
        index = chunk[:, None] + taps
        windows = np.take(x, index, mode="clip").astype(np.float64, copy=False)
        if chunk[0] < 6:
            rows = int(np.searchsorted(chunk, 6))
            windows[:rows][index[:rows] < 0] = 0.0
        if chunk[-1] >= length - 6:
            rows = int(np.searchsorted(chunk, length - 6))
            windows[rows:][index[rows:] >= length] = 0.0
        # (4, chunk): numpy reduces over a short first axis much faster than over a last one
        peaks[first:first + len(chunk)] = np.abs(matrix.T @ windows.T).max(axis=0)
    return peaks


def true_peak_envelope(samples: np.ndarray, floor: float | None = None) -> np.ndarray:
    """Per sample, the largest of |x| and the 4x-oversampled values around it (float64), so that
    peaks between samples, which a DAC or a resampler reconstructs, are counted.

    Interpolation is only computed where the result can reach `floor` (default: the sample
    peak, which is all a peak reading needs): within 6 samples of a sample of at least
    floor / bound. Elsewhere |x| is returned, which is then known to be within the floor. Speech
    is mostly far below its peaks, so this touches a few percent of the clip.
    """
    x = np.asarray(samples, dtype=np.float64)
    magnitude = np.abs(x)
    if len(x) == 0:
        return magnitude
    if floor is None:
        floor = float(magnitude.max())
    return _envelope(magnitude, *_peaks_near_hot(x, magnitude, floor))


def _envelope_to(x: np.ndarray, ceiling: float) -> np.ndarray:
    """true_peak_envelope(x, min(ceiling, sample peak)): exact wherever x's true peak can reach
    `ceiling`, and at the sample peak; |x| taken once."""
    x = np.asarray(x, dtype=np.float64)
    magnitude = np.abs(x)
    if len(x) == 0:
        return magnitude
    return _envelope(magnitude, *_peaks_near_hot(x, magnitude, min(ceiling,
                                                                   float(magnitude.max()))))


def _envelope(magnitude: np.ndarray, candidates: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """|x| raised to the interpolated peaks at `candidates` (float64; a float64 `magnitude` is
    raised in place): what true_peak_envelope returns."""
    envelope = magnitude.astype(np.float64, copy=False)
    envelope[candidates] = np.maximum(envelope[candidates], peaks)
    return envelope


def _peaks_near_hot(x: np.ndarray, magnitude: np.ndarray, floor: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(candidates, interpolated peaks) as true_peak_envelope(x, floor) computes them, for
    float32 or float64 `x` of |x| `magnitude`."""
    _, bound = _interpolation_matrix()
    hot = np.flatnonzero(_at_least(magnitude, floor / bound))
    if len(hot) == 0:
        return hot, np.zeros(0)
    candidates = _near(hot, len(x))
    return candidates, _interpolated_peaks(x, candidates)


def _true_peak(x: np.ndarray, magnitude: np.ndarray, floor: float) -> float:
    """true_peak_envelope(x, floor).max() for float32 or float64 `x` of |x| `magnitude`, without
    building the envelope: the sample peak or an interpolated value near a hot sample."""
    _, peaks = _peaks_near_hot(x, magnitude, floor)
    return max(float(magnitude.max()), float(peaks.max(initial=0.0)))


def true_peak_db(samples: np.ndarray) -> float:
    """Peak level in dBTP estimated with 4x oversampling (inter-sample peaks included)."""
    if len(samples) == 0:
        return FLOOR_DB
    return _amplitude_db(float(true_peak_envelope(samples).max()))


def _amplitude_db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else FLOOR_DB


GAIN_HEADROOM = 10.0 ** (1.0 / 20.0)  # envelopes are made exact for gains up to 1 dB above


def _limiter_gains(envelope: np.ndarray, ceiling: float, sample_rate: int, gain: float = 1.0
                   ) -> list[tuple[int, np.ndarray]]:
    """(start, gain) of each stretch where a smooth gain must dip below 1 to keep `gain` times
    `envelope` (the true-peak envelope, exact wherever that can pass the ceiling) under
    `ceiling` (linear).

    A minimum filter then a moving average of the same width: every sample gets at most the gain
    its own peak allows, and the gain moves over ~20 ms, not per sample. The gain can only dip
    within 2 widths of a peak, so it is computed on those stretches alone, apart enough that each
    one's filters see only 1.0 beyond it, exactly as they would on the whole clip.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    # envelope * gain > ceiling, the products taken only where they can be (a superset first)
    over = np.flatnonzero(envelope > ceiling / gain * (1.0 - 1e-12))
    over = over[envelope[over] * gain > ceiling]
    if len(over) == 0:
        return []
    width = 2 * max(1, round(sample_rate * LIMITER_WINDOW_S)) + 1
    margin = 2 * width
    apart = np.diff(over) > 2 * margin
    gains = []
    for first, last in zip(over[np.concatenate(([True], apart))],
                           over[np.concatenate((apart, [True]))], strict=True):
        start, stop = max(0, int(first) - margin), min(len(envelope), int(last) + 1 + margin)
        needed = np.minimum(1.0, ceiling / np.maximum(envelope[start:stop] * gain, 1e-12))
        smooth = uniform_filter1d(minimum_filter1d(needed, width, mode="nearest"), width,
                                  mode="nearest")
        gains.append((start, np.minimum(smooth, needed)))
    return gains


def _apply_gains(x: np.ndarray, gains: list[tuple[int, np.ndarray]], *, copy: bool = True
                 ) -> np.ndarray:
    """`x` with each (start, gain) stretch multiplied in; `copy=False` changes `x` itself."""
    out = x.copy() if copy else x
    for start, gain in gains:
        out[start:start + len(gain)] *= gain
    return out


def _settle(peak: float, ceiling: float) -> float:
    """The static gain that brings a residue of the smoothing under the ceiling (1.0: none)."""
    return ceiling / peak * (1.0 - 1e-6) if peak > ceiling else 1.0


def limit_true_peak(samples: np.ndarray, sample_rate: int, ceiling_db: float) -> np.ndarray:
    """Bring every true peak to at most `ceiling_db` dBTP with a smooth look-ahead gain (float64).
    Parts already below the ceiling (more than ~10 ms away from a peak) are unchanged."""
    x = np.asarray(samples, dtype=np.float64)
    if len(x) == 0:
        return x
    ceiling = 10.0 ** (ceiling_db / 20.0)
    envelope = _envelope_to(x, ceiling)
    gains = _limiter_gains(envelope, ceiling, sample_rate)
    if gains:
        x = _apply_gains(x, gains)
        envelope = _envelope_to(x, ceiling)
    return x * _settle(float(envelope.max()), ceiling)


@dataclass(frozen=True)
class _LimitedGain:
    """A gain of `gain` with the limiter's dips on top and a static `scale` last, described
    without building the samples: what one round of loudness normalisation tries."""

    gain: float
    dips: list[tuple[int, np.ndarray]]
    scale: float
    true_peak: float  # of the result, linear
    lufs: float  # of the result

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = _apply_gains(x * self.gain, self.dips, copy=False)
        out *= self.scale
        return out


def _try_gain(x: np.ndarray, envelope: np.ndarray, weighted: np.ndarray, gain: float,
              ceiling: float, sample_rate: int) -> _LimitedGain:
    """Gain `x` and limit it, measuring the result's true peak and loudness from what changed.

    `envelope` is x's, exact wherever gain * envelope can reach the ceiling. Outside the dips the
    result is x * gain, whose envelope is gain * envelope (under the ceiling there); inside them
    the envelope is recomputed. The K-weighting is linear, so the result's is gain * weighted plus
    the filtered change, each dip's change filtered with the tail the filter rings for.
    """
    from scipy.signal import sosfilt

    dips = _limiter_gains(envelope, ceiling, sample_rate, gain)
    length = len(x)
    outside = 0.0  # the envelope's largest value outside the dips
    previous = 0
    peak = 0.0
    for start, dip in dips:
        stop = start + len(dip)
        if start > previous:
            outside = max(outside, float(envelope[previous:start].max()))
        previous = stop
        lo, hi = max(0, start - 6), min(length, stop + 6)  # the interpolation's context
        segment = x[lo:hi] * gain
        segment[start - lo:stop - lo] *= dip
        inside = _envelope_to(segment, ceiling)
        peak = max(peak, float(inside[start - lo:stop - lo].max()))
    if previous < length:
        outside = max(outside, float(envelope[previous:].max()))
    peak = max(peak, gain * outside)
    scale = _settle(peak, ceiling)

    out = weighted * gain
    sos = _k_weighting_sos(sample_rate)
    tail = round(K_WEIGHTING_TAIL_S * sample_rate)
    group: list[tuple[int, np.ndarray]] = []
    for index, (start, dip) in enumerate(dips):
        group.append((start, dip))
        following = dips[index + 1][0] if index + 1 < len(dips) else None
        end = start + len(dip)
        if following is not None and following < end + tail:
            continue  # rings into the next dip: filter them together
        first = group[0][0]
        stop = min(length, end + tail)
        change = np.zeros(stop - first)
        for dip_start, dip_gain in group:
            span = slice(dip_start, dip_start + len(dip_gain))
            change[dip_start - first:dip_start - first + len(dip_gain)] = (
                x[span] * gain * (dip_gain - 1.0))
        out[first:stop] += sosfilt(sos, change)
        group = []
    if scale != 1.0:
        out *= scale
    lufs = _loudness_of_weighted(out, sample_rate)
    return _LimitedGain(gain, dips, scale, peak * scale, lufs)


def _normalize_loudness(
    x: np.ndarray, sample_rate: int, target_lufs: float, ceiling_db: float, lufs: float,
    weighted: np.ndarray | None = None,
) -> tuple[np.ndarray, float, float]:
    """(float32 samples, loudness after, true peak after in dBTP) for `x` (float32 or float64,
    computed in float64) of loudness `lufs`; `weighted` is x's K-weighting when already
    computed."""
    ceiling = 10.0 ** (ceiling_db / 20.0)
    gain = 10.0 ** ((target_lufs - lufs) / 20.0)
    magnitude = np.abs(x)
    peak = float(magnitude.max())
    # Exact wherever a peak could pass the ceiling after the gain (or a gain 1 dB higher, which
    # the limiter's rounds may reach), and at the sample peak.
    exact_gain = gain * GAIN_HEADROOM
    floor = min(ceiling / exact_gain, peak)
    candidates, peaks = _peaks_near_hot(x, magnitude, floor)
    true_peak = max(peak, float(peaks.max(initial=0.0)))  # _true_peak, with what it needs next
    if gain * true_peak <= ceiling:
        # A plain gain, the common case: BS.1770 loudness scales with the gain (its gates are
        # relative, bar the -70 LUFS floor), so the result is the target without measuring again.
        # The product is taken in float64 and rounded once to float32, without a float64 copy.
        out = np.multiply(x, np.float64(gain), out=np.empty(len(x), np.float32),
                          casting="same_kind")
        return out, target_lufs, _amplitude_db(gain * true_peak)
    x = np.asarray(x, dtype=np.float64)
    envelope = _envelope(magnitude, candidates, peaks)  # true_peak_envelope(x, floor)
    if weighted is None:
        weighted = k_weighted(x, sample_rate)
    # The limiter lowers the loudness a little: raise the gain and limit again, up to 4 rounds,
    # until within 0.1 LU of the target. Each round measures only what the limiter changed.
    for _ in range(4):
        if gain > exact_gain:
            exact_gain = gain * GAIN_HEADROOM
            envelope = true_peak_envelope(x, min(ceiling / exact_gain, peak))
        attempt = _try_gain(x, envelope, weighted, gain, ceiling, sample_rate)
        if not math.isfinite(attempt.lufs) or abs(attempt.lufs - target_lufs) <= 0.1:
            break
        gain *= 10.0 ** ((target_lufs - attempt.lufs) / 20.0)
    return attempt.apply(x).astype(np.float32), attempt.lufs, _amplitude_db(attempt.true_peak)


def normalize_loudness(
    samples: np.ndarray,
    sample_rate: int,
    target_lufs: float = -20.0,
    true_peak_ceiling_db: float = -1.0,
    lufs: float | None = None,
) -> np.ndarray:
    """Gain to `target_lufs` (BS.1770), limiting true peaks to the ceiling; float32 out.

    `lufs` is the input's loudness when already measured. Silent input is returned unchanged.
    """
    x = np.asarray(samples, dtype=np.float64)
    weighted = k_weighted(x, sample_rate) if lufs is None else None
    current = _loudness_of_weighted(weighted, sample_rate) if lufs is None else lufs
    if not math.isfinite(current):
        return x.astype(np.float32)
    return _normalize_loudness(x, sample_rate, target_lufs, true_peak_ceiling_db, current,
                               weighted)[0]


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
    speech_level = float(_to_db(powers[speech].mean()))
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
    lufs = _loudness_of_weighted(weighted, sample_rate)
    m["lufs_before"] = lufs
    if not math.isfinite(lufs):
        raise _reject("too_quiet", "loudness below the -70 LUFS gate", m)
    if options.loudness_norm:
        x, m["lufs_after"], m["true_peak_db_after"] = _normalize_loudness(
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

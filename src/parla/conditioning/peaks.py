"""True peaks (4x oversampled, inter-sample peaks included) and the peak limiter that lets a
loudness gain reach its target without exceeding the true-peak ceiling."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from parla.conditioning.levels import FLOOR_DB
from parla.conditioning.loudness import (
    K_WEIGHTING_TAIL_S,
    k_weighted,
    k_weighting_sos,
    loudness_of_weighted,
)

LIMITER_WINDOW_S = 0.005  # half-width of the peak limiter's gain smoothing


TRUE_PEAK_OVERSAMPLING = 4


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
    dips = _limiter_gains(envelope, ceiling, sample_rate, gain)
    peak = _limited_peak(x, envelope, dips, gain, ceiling)
    scale = _settle(peak, ceiling)
    out = _limited_weighted(x, weighted, dips, gain, sample_rate)
    if scale != 1.0:
        out *= scale
    lufs = loudness_of_weighted(out, sample_rate)
    return _LimitedGain(gain, dips, scale, peak * scale, lufs)


def _limited_peak(x: np.ndarray, envelope: np.ndarray, dips: list[tuple[int, np.ndarray]],
                  gain: float, ceiling: float) -> float:
    """The true peak of x * gain with the dips applied: recomputed inside them only."""
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
    return max(peak, gain * outside)


def _limited_weighted(x: np.ndarray, weighted: np.ndarray, dips: list[tuple[int, np.ndarray]],
                      gain: float, sample_rate: int) -> np.ndarray:
    """The K-weighted x * gain with the dips applied: gain * weighted plus each change filtered
    (the filter is linear), dips that ring into each other filtered together."""
    from scipy.signal import sosfilt

    length = len(x)
    out = weighted * gain
    sos = k_weighting_sos(sample_rate)
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
    return out


def normalize_to_target(
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
    current = loudness_of_weighted(weighted, sample_rate) if lufs is None else lufs
    if not math.isfinite(current):
        return x.astype(np.float32)
    return normalize_to_target(x, sample_rate, target_lufs, true_peak_ceiling_db, current,
                               weighted)[0]

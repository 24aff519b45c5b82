"""Frame levels of a clip and what they tell: 10 ms frame powers above a speech band, the SNR
estimate, the clipped fraction, and the trim of the silence around the speech. Pure functions on
arrays."""

from __future__ import annotations

import functools
import math

import numpy as np

FRAME_S = 0.010  # frame hop and length for levels: 10 ms resolution on speech boundaries


FLOOR_DB = -100.0  # level given to digital silence, so logs stay finite


CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample


MAX_SNR_DB = 100.0  # SNR is clipped to +-this (digitally silent pauses would give infinity)


FADE_S = 0.005  # raised-cosine fade at trim points so cuts through background noise do not click


# Frame energies are taken above this: voiced speech keeps most of its energy there, while hum,
# rumble, traffic noise and DC have little. The detector, the speech level and the SNR share them.
SPEECH_BAND_HZ = 250.0


Region = tuple[int, int]


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


def percentiles(values: np.ndarray, percents: tuple[float, ...]) -> list[float]:
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


def to_db(power: np.ndarray | float) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power, 10.0 ** (FLOOR_DB / 10.0)))


def frame_hop(sample_rate: int) -> int:
    return max(1, round(sample_rate * FRAME_S))


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
    hop = frame_hop(sample_rate)
    mask = np.zeros(len(powers), dtype=bool)
    first, last = region[0] // hop, max(region[0] // hop + 1, -(-region[1] // hop))
    mask[first:last] = True
    levels = to_db(powers)
    inside = levels[first:last]
    if len(inside):
        # Inside the span, frames within 6 dB of the noise floor are pauses, not speech.
        floor = percentiles(levels, (10.0,))[0]
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

"""Integrated loudness after ITU-R BS.1770 (K-weighting, 400 ms gated blocks, relative gate)."""

from __future__ import annotations

import functools
import math

import numpy as np

LOUDNESS_BLOCK_S = 0.4  # BS.1770 gating block


K_WEIGHTING_TAIL_S = 0.12  # the K-weighting rings below 1e-12 of its peak within 0.11 s


@functools.lru_cache(maxsize=16)
def k_weighting_sos(sample_rate: int) -> np.ndarray:
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
    return sosfilt(k_weighting_sos(sample_rate), x)


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


def loudness_of_weighted(weighted: np.ndarray, sample_rate: int) -> float:
    block = _gating_block_s(len(weighted), sample_rate)
    if block is None:
        return float("-inf")
    lufs = gated_loudness(weighted, sample_rate, block)
    return lufs if math.isfinite(lufs) else float("-inf")


def measure_loudness(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4: K-weighting, 400 ms blocks, both gates);
    -inf for silence. Clips shorter than one gating block are measured as a single block.
    Agrees with pyloudnorm's meter to ~1e-9 LU (the reference in tests/test_conditioning.py)."""
    return loudness_of_weighted(k_weighted(samples, sample_rate), sample_rate)

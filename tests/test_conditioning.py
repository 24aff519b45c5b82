"""Clip conditioning (parla.conditioning.policy): trimming, loudness, rejects, speech detectors.

Clips are built here with known silence, level, clipping and noise, so the speech span is known by
construction: synthetic voiced "syllables" everywhere, and real Catalan speech from espeak-ng
where it is installed.
"""

from __future__ import annotations

import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from scipy.signal import resample_poly

from conftest import missing_system_tool
from parla.conditioning import levels, peaks, vad
from parla.conditioning.levels import (
    clipped_fraction,
    estimate_snr_db,
    frame_powers,
    speech_frame_mask,
    trim_silence,
)
from parla.conditioning.loudness import gated_loudness, k_weighted, measure_loudness
from parla.conditioning.peaks import (
    limit_true_peak,
    normalize_loudness,
    true_peak_db,
    true_peak_envelope,
)
from parla.conditioning.policy import ClipRejected, Conditioner, condition_clip
from parla.conditioning.vad import EnergySpeechDetector, detect_speech, make_speech_detector
from parla.errors import RowRejected, UsageError
from parla.options import ConditioningOptions

RATE = 24000
TEXT = "Bon dia a tothom, com estem avui?"  # 33 characters
ENERGY = ConditioningOptions(vad="energy")


# --- clips -----------------------------------------------------------------------------------


def speech_like(seconds: float, rng: np.random.Generator, rate: int = RATE,
                f0: float = 140.0) -> np.ndarray:
    """Voiced syllables (harmonics of a wobbling f0) under Hann envelopes with short gaps; starts
    and ends on a non-zero sample, peak 1."""
    n = int(seconds * rate)
    out = np.zeros(n)
    pos = 0
    while True:
        length = int(rng.uniform(0.12, 0.25) * rate)
        if pos + length > n:
            break
        t = np.arange(length) / rate
        f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)))
        phase = 2 * np.pi * np.cumsum(f) / rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 25) if k * f0 < 0.45 * rate)
        out[pos:pos + length] = voiced * np.hanning(length + 2)[1:-1] * rng.uniform(0.5, 1.0)
        pos += length + int(rng.uniform(0.02, 0.08) * rate)
    nonzero = np.flatnonzero(out)
    out = out[nonzero[0]: nonzero[-1] + 1]
    return out / np.abs(out).max()


def padded(speech: np.ndarray, lead_s: float, tail_s: float, rate: int = RATE,
           snr_db: float | None = None, seed: int = 0) -> tuple[np.ndarray, int, int]:
    """(clip, start, end): speech between known silences, white noise at a known SNR (speech
    power over noise power) if asked."""
    lead, tail = int(lead_s * rate), int(tail_s * rate)
    clip = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    if snr_db is not None:
        noise = np.random.default_rng(seed).standard_normal(len(clip))
        clip = clip + noise * np.sqrt(np.mean(speech**2) / 10 ** (snr_db / 10))
    return clip.astype(np.float32), lead, lead + len(speech)


@pytest.fixture(scope="module")
def espeak(tmp_path_factory) -> np.ndarray:
    """Catalan espeak-ng speech at RATE, cut to where it first and last reaches -50 dB re peak."""
    if shutil.which("espeak-ng") is None:
        missing_system_tool("espeak-ng not installed")
    wav = Path(tmp_path_factory.mktemp("espeak")) / "f.wav"
    subprocess.run(["espeak-ng", "-v", "ca", "-w", str(wav),
                    "Fa fred als dies de vent forts, però els peixos neden tranquils."],
                   check=True, capture_output=True)
    samples, rate = sf.read(wav, dtype="float32")
    samples = soxr.resample(samples, rate, RATE)
    loud = np.flatnonzero(np.abs(samples) >= np.abs(samples).max() * 10 ** (-50 / 20))
    return (samples[loud[0]: loud[-1] + 1] * 0.5).astype(np.float64)


ESPEAK_TEXT = "Fa fred als dies de vent forts, però els peixos neden tranquils."


def kept_span(clip: np.ndarray, out: np.ndarray) -> int:
    """Where `out` (trimmed, no gain) starts in `clip`."""
    hits = [i for i in range(len(clip) - len(out) + 1)
            if np.array_equal(clip[i + len(out) // 2], out[len(out) // 2])
            and np.array_equal(clip[i: i + len(out)][200:-200], out[200:-200])]
    assert len(hits) == 1
    return hits[0]


# --- speech detection and trimming -----------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
@pytest.mark.parametrize("snr_db", [None, 30.0, 15.0])
def test_energy_detector_finds_the_speech_span(rate: int, snr_db: float | None) -> None:
    rng = np.random.default_rng(int(rate + (snr_db or 0)))
    clip, start, end = padded(0.3 * speech_like(2.0, rng, rate), 0.6, 0.9, rate, snr_db)
    region = detect_speech(clip, rate, EnergySpeechDetector())
    assert region is not None
    keep = int(0.1 * rate)
    # Never past the 100 ms that trimming keeps (which would cut speech), never 150 ms loose.
    assert start - int(0.15 * rate) <= region[0] < start + keep
    assert end - keep < region[1] <= end + int(0.15 * rate)


@pytest.mark.parametrize(("lead_s", "tail_s", "snr_db"),
                         [(0.8, 0.5, None), (0.05, 1.2, 30.0), (0.0, 0.0, 40.0), (1.0, 0.3, 15.0)])
def test_trimming_never_cuts_inside_speech(espeak, lead_s, tail_s, snr_db) -> None:
    clip, start, end = padded(espeak, lead_s, tail_s, snr_db=snr_db)
    options = ConditioningOptions(vad="energy", loudness_norm=False, min_snr_db=None)
    out = condition_clip(clip, RATE, ESPEAK_TEXT, options)
    offset = kept_span(clip, out.samples)
    # Every speech sample is there, untouched (no fade, no gain).
    assert offset <= start and offset + len(out.samples) >= end
    np.testing.assert_array_equal(out.samples[start - offset: end - offset], clip[start:end])
    m = out.measurements
    assert m["leading_silence_s_after"] <= 0.1 + 1e-9
    assert m["trailing_silence_s_after"] <= 0.1 + 1e-9
    # Most of the padding is gone, and the before/after numbers describe the cut.
    assert len(out.samples) <= (end - start) + int(0.35 * RATE)
    assert abs(m["leading_silence_s_before"] - m["leading_silence_s_after"] - offset / RATE) < 1e-9
    assert abs(m["leading_silence_s_before"] - lead_s) < 0.1


def test_trim_keeps_the_requested_silence() -> None:
    rng = np.random.default_rng(3)
    clip, start, end = padded(0.3 * speech_like(1.5, rng), 0.7, 0.7, snr_db=35)
    for keep_ms in (0.0, 100.0, 250.0):
        out = condition_clip(clip, RATE, TEXT, ConditioningOptions(
            vad="energy", keep_silence_ms=keep_ms, loudness_norm=False))
        m = out.measurements
        assert m["leading_silence_s_after"] == pytest.approx(keep_ms / 1000)
        assert m["trailing_silence_s_after"] == pytest.approx(keep_ms / 1000)
        expected = m["speech_s"] + 2 * keep_ms / 1000
        assert out.duration == pytest.approx(expected, abs=1 / RATE)


def test_trim_silence_fades_only_the_kept_silence() -> None:
    clip = np.ones(RATE, dtype=np.float32)
    region = (6000, 18000)
    out = trim_silence(clip, RATE, region, keep_silence_ms=100)
    assert len(out) == 12000 + 2 * 2400
    assert out[0] < 0.01 and out[-1] < 0.01  # faded ends: no click
    np.testing.assert_array_equal(out[2400: 2400 + 12000], 1.0)
    assert np.array_equal(trim_silence(clip, RATE, region, 0), clip[6000:18000])


def test_trim_off_keeps_the_whole_clip() -> None:
    rng = np.random.default_rng(4)
    clip, _, _ = padded(0.3 * speech_like(1.5, rng), 0.5, 0.5, snr_db=35)
    out = condition_clip(clip, RATE, TEXT, ConditioningOptions(
        vad="energy", trim_silence=False, loudness_norm=False))
    np.testing.assert_array_equal(out.samples, clip)
    m = out.measurements
    assert m["leading_silence_s_after"] == m["leading_silence_s_before"] > 0.3


def test_energy_detector_on_espeak_speech(espeak) -> None:
    for lead_s, tail_s, snr_db in [(0.5, 0.5, None), (0.3, 1.0, 20.0)]:
        clip, start, end = padded(espeak, lead_s, tail_s, snr_db=snr_db)
        region = EnergySpeechDetector()(clip, RATE)
        assert region is not None
        assert abs(region[0] - start) < 0.1 * RATE
        assert abs(region[1] - end) < 0.1 * RATE


def test_a_click_in_the_silence_is_not_speech() -> None:
    rng = np.random.default_rng(5)
    clip, start, end = padded(0.3 * speech_like(1.5, rng), 1.0, 0.5, snr_db=30)
    clip[int(0.3 * RATE): int(0.305 * RATE)] = 0.3  # 5 ms mic bump, 0.7 s before the speech
    region = EnergySpeechDetector()(clip, RATE)
    assert region is not None and region[0] > start - int(0.15 * RATE)


def test_noise_or_silence_only_has_no_speech() -> None:
    noise = (0.01 * np.random.default_rng(6).standard_normal(2 * RATE)).astype(np.float32)
    assert EnergySpeechDetector()(noise, RATE) is None
    assert EnergySpeechDetector()(np.zeros(RATE, dtype=np.float32), RATE) is None
    assert EnergySpeechDetector()(np.zeros(0, dtype=np.float32), RATE) is None
    for clip in (noise, np.zeros(RATE, dtype=np.float32)):
        with pytest.raises(ClipRejected) as caught:
            condition_clip(clip, RATE, TEXT, ENERGY)
        assert caught.value.reason == "no_speech"


def test_make_speech_detector(monkeypatch) -> None:

    assert isinstance(make_speech_detector("energy"), EnergySpeechDetector)
    monkeypatch.setattr(vad, "silero_available", lambda: False)
    assert isinstance(make_speech_detector("auto"), EnergySpeechDetector)
    monkeypatch.setitem(sys.modules, "silero_vad", None)  # import fails: not installed
    with pytest.raises(UsageError, match="silero-vad"):
        make_speech_detector("silero")
    with pytest.raises(UsageError):
        make_speech_detector("webrtc")


def test_prepare_path_imports_no_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from parla.conditioning.policy import condition_clip\n"
        "from parla.options import ConditioningOptions\n"
        "t = np.arange(48000) / 24000\n"
        "x = (0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype('f4')\n"
        "x = np.concatenate([np.zeros(12000, 'f4'), x, np.zeros(12000, 'f4')])\n"
        "condition_clip(x, 24000, 'Bon dia a tothom.', ConditioningOptions(vad='energy'))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_silero_detector(espeak) -> None:
    pytest.importorskip("silero_vad")
    from parla.conditioning.vad import SileroSpeechDetector

    detector = SileroSpeechDetector()
    for lead_s, tail_s, snr_db in [(0.5, 0.7, None), (0.4, 0.4, 25.0)]:
        clip, start, end = padded(espeak, lead_s, tail_s, snr_db=snr_db)
        region = detector(clip, RATE)
        assert region is not None
        assert abs(region[0] - start) < 0.15 * RATE
        assert abs(region[1] - end) < 0.15 * RATE
    assert detector(np.zeros(RATE, dtype=np.float32), RATE) is None
    out = Conditioner(ConditioningOptions(vad="silero"), detector)(clip, RATE, ESPEAK_TEXT)
    assert out.measurements["vad"] == "silero"


# --- rejects ---------------------------------------------------------------------------------


def test_clipping_is_measured_before_normalisation() -> None:
    rng = np.random.default_rng(7)
    clean, _, _ = padded(0.3 * speech_like(2.0, rng), 0.3, 0.3, snr_db=40)
    clipped = np.clip(clean * 8, -1.0, 1.0)
    fraction = clipped_fraction(clipped)
    assert fraction > 0.01
    assert clipped_fraction(clean) == 0.0
    with pytest.raises(ClipRejected) as caught:
        condition_clip(clipped, RATE, TEXT, ENERGY)  # normalising would bring it under 1
    assert caught.value.reason == "clipped"
    assert caught.value.measurements["clipped_fraction"] == pytest.approx(fraction)
    # The threshold is a fraction: a few full-scale samples pass, None turns the rule off.
    few = clean.copy()
    few[[1000, 5000]] = 1.0
    condition_clip(few, RATE, TEXT, ENERGY)
    unchecked = ConditioningOptions(vad="energy", max_clipped_fraction=None)
    condition_clip(clipped, RATE, TEXT, unchecked)


def test_too_quiet() -> None:
    rng = np.random.default_rng(8)
    clip, _, _ = padded(10 ** (-68 / 20) * speech_like(2.0, rng), 0.3, 0.3)
    with pytest.raises(ClipRejected) as caught:
        condition_clip(clip, RATE, TEXT, ENERGY)
    assert caught.value.reason == "too_quiet"
    # The same speech 30 dB louder is fine.
    condition_clip(clip * 10 ** (30 / 20), RATE, TEXT, ENERGY)


@pytest.mark.parametrize("snr_db", [5.0, 10.0, 20.0, 30.0])
def test_snr_estimate_matches_the_mixed_in_noise(snr_db: float) -> None:
    rng = np.random.default_rng(int(snr_db))
    clip, start, end = padded(0.3 * speech_like(2.5, rng), 0.5, 0.5, snr_db=snr_db, seed=1)
    region = EnergySpeechDetector()(clip, RATE)
    powers = frame_powers(clip, RATE)
    estimate = estimate_snr_db(powers, speech_frame_mask(powers, region, RATE))
    assert abs(estimate - snr_db) < 3.0


def test_low_snr_is_rejected_and_the_rule_can_be_turned_off() -> None:
    rng = np.random.default_rng(9)
    noisy, _, _ = padded(0.3 * speech_like(2.5, rng), 0.5, 0.5, snr_db=5.0)
    with pytest.raises(ClipRejected) as caught:
        condition_clip(noisy, RATE, TEXT, ENERGY)
    assert caught.value.reason == "low_snr"
    assert caught.value.measurements["snr_db"] < 10
    out = condition_clip(noisy, RATE, TEXT, ConditioningOptions(vad="energy", min_snr_db=None))
    assert out.measurements["snr_db"] < 10
    clean, _, _ = padded(0.3 * speech_like(2.5, rng), 0.5, 0.5, snr_db=30.0)
    assert condition_clip(clean, RATE, TEXT, ENERGY).measurements["snr_db"] > 25


def test_speech_without_surrounding_silence_still_gets_an_snr() -> None:
    rng = np.random.default_rng(10)
    clip, _, _ = padded(0.3 * speech_like(2.5, rng), 0.0, 0.0, snr_db=20.0)
    out = condition_clip(clip, RATE, TEXT, ENERGY)
    assert 15 < out.measurements["snr_db"] < 25


def test_speaking_rate_rules() -> None:
    rng = np.random.default_rng(11)
    clip, _, _ = padded(0.3 * speech_like(2.0, rng), 0.3, 0.3, snr_db=35)  # ~2 s of speech
    ok = condition_clip(clip, RATE, TEXT, ENERGY)
    rate = ok.measurements["chars_per_sec"]
    assert rate == pytest.approx(len(TEXT) / ok.measurements["speech_s"])
    too_fast = " ".join(["paraula"] * 12)  # 95 characters in 2 s
    with pytest.raises(ClipRejected) as caught:
        condition_clip(clip, RATE, too_fast, ENERGY)
    assert caught.value.reason == "speaking_rate_too_fast"
    with pytest.raises(ClipRejected) as caught:
        condition_clip(clip, RATE, "Sí.", ENERGY)
    assert caught.value.reason == "speaking_rate_too_slow"
    unbounded = ConditioningOptions(vad="energy", min_chars_per_sec=None, max_chars_per_sec=None)
    condition_clip(clip, RATE, too_fast, unbounded)
    condition_clip(clip, RATE, "Sí.", unbounded)


def test_text_is_normalised_and_checked() -> None:
    rng = np.random.default_rng(12)
    clip, _, _ = padded(0.3 * speech_like(2.0, rng), 0.3, 0.3, snr_db=35)
    out = condition_clip(clip, RATE, "- \u00abCol.lecci\u00f3\u00bb d\u2019art,", ENERGY)
    assert out.text == '"Col\u00b7lecci\u00f3" d\'art'
    with pytest.raises(ClipRejected) as caught:
        condition_clip(clip, RATE, "Ma\u00f1ana vamos a Espa\u00f1a.", ENERGY)
    assert caught.value.reason == "foreign_characters" and "\u00f1" in caught.value.detail
    with pytest.raises(ClipRejected) as caught:
        condition_clip(clip, RATE, " ,- ", ENERGY)
    assert caught.value.reason == "empty_text"
    raw = "Ma\u00f1ana  vamos."
    kept = condition_clip(clip, RATE, raw, ConditioningOptions(
        vad="energy", normalize_text=False, reject_foreign_text=False))
    assert kept.text == raw


def test_invalid_samples() -> None:
    for bad in (np.array([0.1, np.nan, 0.2] * 8000, dtype=np.float32),
                np.zeros((2, 8000), dtype=np.float32), np.zeros(0, dtype=np.float32)):
        with pytest.raises(ClipRejected) as caught:
            condition_clip(bad, RATE, TEXT, ENERGY)
        assert caught.value.reason == "invalid_audio"


def test_clip_rejected_is_a_row_error_that_survives_pickling() -> None:
    error = ClipRejected("low_snr", "4.0 dB (min 10.0)", {"snr_db": 4.0})
    assert isinstance(error, RowRejected)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.detail, copy.measurements) == ("low_snr", "4.0 dB (min 10.0)",
                                                             {"snr_db": 4.0})


# --- loudness --------------------------------------------------------------------------------


def independent_true_peak_db(samples: np.ndarray) -> float:
    """4x oversampled peak with scipy's default polyphase filter (not the one under test)."""
    return 20 * np.log10(np.abs(resample_poly(np.asarray(samples, np.float64), 4, 1)).max())


def test_true_peak_counts_inter_sample_peaks() -> None:
    # A quarter-sample-rate sine sampled 45 degrees off its crests: samples at 0.707, peak 1.
    n = np.arange(4800)
    sine = np.sin(2 * np.pi * n / 4 + np.pi / 4)
    assert 20 * np.log10(np.abs(sine).max()) == pytest.approx(-3.01, abs=0.01)
    assert true_peak_db(sine) > -0.3


def test_true_peak_envelope_is_exact_where_it_matters() -> None:
    rng = np.random.default_rng(13)
    x = 0.3 * speech_like(1.0, rng)
    x = x + 0.01 * rng.standard_normal(len(x))
    full = true_peak_envelope(x, floor=0.0)  # every sample interpolated
    fast = true_peak_envelope(x)  # only around the peaks
    assert fast.max() == pytest.approx(full.max(), rel=1e-12)
    assert np.all(fast <= full + 1e-12)
    assert np.all(full >= np.abs(x))
    assert abs(20 * np.log10(full.max()) - independent_true_peak_db(x)) < 0.1


@pytest.mark.parametrize("level_db", [-45.0, -25.0, -6.0])
@pytest.mark.parametrize("target_lufs", [-20.0, -16.0])
def test_loudness_lands_on_target_under_the_ceiling(level_db: float, target_lufs: float) -> None:
    rng = np.random.default_rng(int(-level_db))
    clip, _, _ = padded(10 ** (level_db / 20) * speech_like(2.0, rng), 0.1, 0.1, snr_db=40)
    out = normalize_loudness(clip, RATE, target_lufs=target_lufs, true_peak_ceiling_db=-1.0)
    assert out.dtype == np.float32
    assert abs(measure_loudness(out, RATE) - target_lufs) <= 0.5
    assert true_peak_db(out) <= -1.0 + 1e-6
    assert independent_true_peak_db(out) <= -1.0 + 0.1


def test_peaky_clips_are_limited_not_left_quiet() -> None:
    rng = np.random.default_rng(14)
    clip, _, _ = padded(0.05 * speech_like(2.0, rng), 0.1, 0.1, snr_db=40)
    clip[[8000, 20000, 30000]] = [0.9, -0.9, 0.9]  # clicks 25 dB over the speech
    out = normalize_loudness(clip, RATE, target_lufs=-16.0, true_peak_ceiling_db=-2.0)
    assert abs(measure_loudness(out, RATE) + 16.0) <= 0.5
    assert true_peak_db(out) <= -2.0 + 1e-6
    # Far from the clicks the limiter leaves the waveform alone: one gain for all of it.
    ratio = out[40000:44000] / clip[40000:44000]
    assert np.allclose(ratio, ratio[0], rtol=1e-4)
    limited = limit_true_peak(clip, RATE, -6.0)
    assert true_peak_db(limited) <= -6.0 + 1e-6


def test_short_and_silent_clips_have_a_loudness() -> None:
    rng = np.random.default_rng(15)
    short = 0.1 * speech_like(0.25, rng)  # shorter than one 400 ms gating block
    assert np.isfinite(measure_loudness(short, RATE))
    assert measure_loudness(np.zeros(RATE), RATE) == float("-inf")
    assert np.array_equal(normalize_loudness(np.zeros(100), RATE), np.zeros(100, np.float32))


def test_condition_clip_output() -> None:
    rng = np.random.default_rng(16)
    clip, start, end = padded(0.02 * speech_like(2.0, rng), 0.5, 0.6, snr_db=30)
    out = condition_clip(clip, RATE, TEXT, ENERGY)
    m = out.measurements
    assert out.samples.dtype == np.float32 and out.samples.ndim == 1
    assert out.sample_rate == RATE and out.text == TEXT
    assert abs(m["lufs_after"] - (-20.0)) <= 0.5
    assert abs(measure_loudness(out.samples, RATE) + 20.0) <= 0.5
    assert m["lufs_before"] < -30
    assert m["true_peak_db_after"] <= -1.0 + 1e-6
    assert true_peak_db(out.samples) <= -1.0 + 1e-4
    assert m["duration_s_after"] == pytest.approx(out.duration)
    assert m["duration_s_before"] == pytest.approx(len(clip) / RATE)
    assert m["vad"] == "energy" and m["clipped_fraction"] == 0.0
    for key in ("leading_silence_s_before", "trailing_silence_s_before",
                "leading_silence_s_after", "trailing_silence_s_after",
                "snr_db", "chars_per_sec", "speech_s"):
        assert np.isfinite(m[key])
    # loudness_norm off: the level is left alone.
    raw = condition_clip(clip, RATE, TEXT, ConditioningOptions(vad="energy", loudness_norm=False))
    assert raw.measurements["lufs_after"] == raw.measurements["lufs_before"]


def test_conditioning_is_deterministic() -> None:
    rng = np.random.default_rng(17)
    clip, _, _ = padded(0.2 * speech_like(2.0, rng), 0.4, 0.4, snr_db=25)
    conditioner = Conditioner(ENERGY)
    first, second = conditioner(clip, RATE, TEXT), conditioner(clip.copy(), RATE, TEXT)
    assert first.samples.tobytes() == second.samples.tobytes()
    assert first.measurements == second.measurements


def test_condition_audio_off_passes_samples_through_and_keeps_text_rules():
    from parla.conditioning.policy import ClipRejected, condition_clip, needs_analysis
    from parla.options import ConditioningOptions

    off = ConditioningOptions(condition_audio=False)
    assert not needs_analysis(off) and needs_analysis(ConditioningOptions())
    samples = np.zeros(24000, dtype=np.float32)  # silence: every audio rule would reject it
    samples[100] = 1.0  # and clipped
    clip = condition_clip(samples, 24000, "  l’home  ", off)
    assert np.array_equal(clip.samples, samples) and clip.text == "l'home"
    with pytest.raises(ClipRejected, match="foreign_characters"):
        condition_clip(samples, 24000, "Привет", off)


@pytest.mark.parametrize("length", [6007, 4801, 9599, 3, 2])
def test_loudness_of_clips_shorter_than_a_gating_block_never_raises(length):
    import pyloudnorm

    from parla.conditioning.loudness import measure_loudness

    rng = np.random.default_rng(length)
    samples = (0.1 * rng.standard_normal(length)).astype(np.float32)
    lufs = measure_loudness(samples, 24000)
    # as documented: one block, the whole clip less one sample (pyloudnorm's meter, given that
    # block, is the reference); noise at -20 dBFS is well above both gates, so it is finite
    block = (length - 1) / 24000
    reference = pyloudnorm.Meter(24000, block_size=block).integrated_loudness(
        samples.astype(np.float64))
    assert isinstance(lufs, float) and math.isfinite(lufs)
    assert lufs == pytest.approx(reference, abs=1e-6)


@pytest.mark.parametrize("samples", [np.ones(1, np.float32), np.zeros(6007, np.float32)],
                         ids=["one_sample", "silent"])
def test_loudness_is_minus_infinity_for_a_clip_too_short_to_measure_or_silent(samples):
    from parla.conditioning.loudness import measure_loudness

    assert measure_loudness(samples, 24000) == float("-inf")


def test_a_very_short_word_is_conditioned_or_rejected_never_a_crash():
    from parla.conditioning.policy import ClipRejected, condition_clip

    rng = np.random.default_rng(0)
    samples = (1e-3 * rng.standard_normal(48000)).astype(np.float32)
    word = np.arange(1400) / 24000  # a 58 ms word in 2 s of room noise
    samples[20000:21400] += (0.3 * np.sin(2 * np.pi * 220 * word)).astype(np.float32)
    try:
        clip = condition_clip(samples, 24000, "Sí", ConditioningOptions(min_chars_per_sec=None))
    except ClipRejected as rejected:
        # a detector may miss 58 ms of speech; no other rule applies: the word is at about
        # -18 dBFS, some 40 dB over the noise, and the speaking rate is not checked
        assert rejected.reason == "no_speech", rejected
        return
    assert 1400 <= clip.samples.size < samples.size
    m = clip.measurements
    # the kept span holds the whole word (samples 20000 to 21400)
    assert m["leading_silence_s_before"] <= 20000 / 24000
    assert m["leading_silence_s_before"] + m["speech_s"] >= 21400 / 24000


# --- fast paths against their references ------------------------------------------------------
# Conditioning computes from shared intermediates (one band-limited frame-energy pass, one
# K-weighting pass, true peaks only where they can matter, the limiter only around peaks). Each
# fast path is checked here against a plain implementation of the same thing.


def pyloudnorm_lufs(samples: np.ndarray, rate: int) -> float:
    """The reference meter, with the same short-clip rule as measure_loudness."""
    import pyloudnorm

    block = min(0.4, (len(samples) - 1) / rate)
    with np.errstate(divide="ignore"):
        return float(pyloudnorm.Meter(rate, block_size=block).integrated_loudness(
            np.asarray(samples, dtype=np.float64)))


def reference_clips(rate: int) -> list[np.ndarray]:
    rng = np.random.default_rng(rate)
    clips = [padded(0.3 * speech_like(2.0, rng, rate), 0.4, 0.5, rate, snr_db=30)[0],
             padded(0.01 * speech_like(3.0, rng, rate, f0=220), 0.2, 1.0, rate, snr_db=15)[0],
             0.1 * rng.standard_normal(int(1.37 * rate)),  # steady noise, odd length
             0.2 * speech_like(0.3, rng, rate),  # shorter than one gating block
             np.concatenate([0.5 * speech_like(1.0, rng, rate),
                             1e-4 * rng.standard_normal(2 * rate)])]  # blocks under the gates
    return [np.asarray(clip, dtype=np.float64) for clip in clips]


@pytest.mark.parametrize("rate", [16000, 22050, 24000, 48000])
def test_loudness_matches_pyloudnorm(rate: int) -> None:
    for clip in reference_clips(rate):
        assert measure_loudness(clip, rate) == pytest.approx(pyloudnorm_lufs(clip, rate),
                                                             abs=1e-6)
        # gated_loudness on the K-weighting is the same meter, and scales exactly with a gain
        lufs = gated_loudness(k_weighted(clip, rate), rate, min(0.4, (len(clip) - 1) / rate))
        assert lufs == pytest.approx(pyloudnorm_lufs(clip, rate), abs=1e-6)
        louder = measure_loudness(clip * 10 ** (6 / 20), rate)
        assert louder == pytest.approx(pyloudnorm_lufs(clip, rate) + 6.0, abs=1e-6)
    assert measure_loudness(np.zeros(rate), rate) == float("-inf")
    assert measure_loudness(1e-6 * np.ones(rate), rate) == float("-inf")  # under -70 LUFS


def test_frame_powers_match_a_plain_filter_and_mean() -> None:
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(20)
    for rate, length in ((24000, 96123), (16000, 16000), (48000, 4799)):
        x = rng.standard_normal(length)
        hop = round(rate * 0.01)
        filtered = sosfilt(butter(2, 250.0, btype="highpass", fs=rate, output="sos"), x)
        expected = [np.mean(filtered[i:i + hop] ** 2) for i in range(0, length, hop)]
        np.testing.assert_allclose(frame_powers(x, rate), expected, rtol=1e-12)
        unfiltered = [np.mean(x[i:i + hop] ** 2) for i in range(0, length, hop)]
        np.testing.assert_allclose(frame_powers(x, rate, None), unfiltered, rtol=1e-12)


def test_percentiles_are_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(21)
    for length in [1, 2, 3, 7, 10, 11, 50, 399, 400, 401]:
        values = rng.standard_normal(length) * 20 - 40
        assert levels.percentiles(values, (10.0, 2.0, 50.0, 97.5)) == [
            float(v) for v in np.percentile(values, [10.0, 2.0, 50.0, 97.5])]


def test_the_detector_region_from_shared_powers_is_the_detector_on_samples() -> None:
    rng = np.random.default_rng(22)
    clip, _, _ = padded(0.3 * speech_like(2.0, rng), 0.5, 0.7, snr_db=25)
    detector = EnergySpeechDetector()
    assert detector.region(frame_powers(clip, RATE), len(clip), RATE) == detector(clip, RATE)


def brute_force_envelope(x: np.ndarray) -> np.ndarray:
    """Every sample's 4 oversampled values, one window at a time."""
    matrix, _ = peaks._interpolation_matrix()
    padded_x = np.pad(np.asarray(x, dtype=np.float64), 6)
    values = [np.abs(padded_x[n:n + 13] @ matrix).max() for n in range(len(x))]
    return np.maximum(np.abs(x), values)


def test_true_peak_envelope_matches_brute_force_where_it_is_exact() -> None:
    rng = np.random.default_rng(23)
    x = 0.3 * speech_like(0.5, rng)
    x = x + 0.01 * rng.standard_normal(len(x))
    reference = brute_force_envelope(x)
    np.testing.assert_allclose(true_peak_envelope(x, floor=0.0), reference, rtol=1e-12)
    for floor in (float(np.abs(x).max()), 0.5 * float(np.abs(x).max())):
        fast = true_peak_envelope(x, floor)
        exact = reference >= floor
        np.testing.assert_allclose(fast[exact], reference[exact], rtol=1e-12)
        assert np.all(fast <= reference + 1e-12) and np.all(fast[~exact] < floor)


def reference_limiter_gain(envelope: np.ndarray, ceiling: float, rate: int) -> np.ndarray:
    """The limiter's gain computed on the whole clip at once."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    needed = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-12))
    width = 2 * max(1, round(rate * peaks.LIMITER_WINDOW_S)) + 1
    smooth = uniform_filter1d(minimum_filter1d(needed, width, mode="nearest"), width,
                              mode="nearest")
    return np.minimum(smooth, needed)


def peaky_clip(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clip, _, _ = padded(0.05 * speech_like(2.0, rng), 0.1, 0.1, snr_db=40)
    clip[[200, 8000, 8400, 20000, 30000, len(clip) - 100]] = [0.7, 0.9, -0.8, -0.9, 0.9, 0.6]
    return clip.astype(np.float64)


def test_limiter_gain_around_peaks_equals_the_whole_clip_computation() -> None:
    for seed in range(3):
        x = peaky_clip(seed)
        ceiling = 10 ** (-12 / 20)
        envelope = true_peak_envelope(x, ceiling)
        dips = peaks._limiter_gains(envelope, ceiling, RATE)
        assert 1 < len(dips) < 10  # separate stretches, clip edges included
        gain = peaks._apply_gains(np.ones(len(x)), dips)
        np.testing.assert_allclose(gain, reference_limiter_gain(envelope, ceiling, RATE),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_limiter_round_measures_what_it_makes(seed: int) -> None:
    """_try_gain's loudness and true peak come from what the limiter changed; measured on the
    samples it builds they are the same."""
    x = peaky_clip(seed)
    rate, ceiling, gain = RATE, 10 ** (-1 / 20), 10 ** (14 / 20)
    envelope = true_peak_envelope(x, ceiling / gain / peaks.GAIN_HEADROOM)
    attempt = peaks._try_gain(x, envelope, k_weighted(x, rate), gain, ceiling, rate)
    out = attempt.apply(x)
    assert attempt.dips
    assert attempt.lufs == pytest.approx(pyloudnorm_lufs(out, rate), abs=1e-6)
    assert attempt.true_peak == pytest.approx(float(brute_force_envelope(out).max()), rel=1e-9)
    assert attempt.true_peak <= ceiling


@pytest.mark.parametrize("seed", range(6))
def test_conditioned_loudness_is_what_pyloudnorm_measures(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    level_db = -30.0 if seed % 2 else rng.uniform(-40, -3)
    clip, start, end = padded(10 ** (level_db / 20) * speech_like(2.5, rng), rng.uniform(0.1, 0.8),
                              rng.uniform(0.1, 0.8), snr_db=rng.uniform(20, 40))
    if seed % 2:
        clip[rng.integers(start + RATE // 4, end - RATE // 4, 3)] = 0.95  # clicks: limited
    out = condition_clip(clip, RATE, TEXT, ENERGY)
    m = out.measurements
    if seed % 2:
        assert m["true_peak_db_after"] > -1.01  # the limiter was at work
    assert abs(pyloudnorm_lufs(out.samples, RATE) - m["lufs_after"]) <= 0.01
    assert abs(m["lufs_after"] + 20.0) <= 0.1
    assert float(brute_force_envelope(out.samples).max()) <= 10 ** (-1 / 20) * (1 + 1e-4)


# --- fast paths against the plain computations ------------------------------------------------


def test_near_is_every_sample_within_six_of_a_hot_one() -> None:
    rng = np.random.default_rng(30)
    for length in (1, 5, 13, 14, 200, 5000):
        for count in (1, 2, 3, 10, 100):
            hot = np.unique(rng.integers(0, length, count))
            near = np.zeros(length + 12, dtype=bool)  # the clip-long mask it replaces
            for offset in range(13):
                near[hot + offset] = True
            np.testing.assert_array_equal(peaks._near(hot, length),
                                          np.flatnonzero(near[6:-6]))


def test_at_least_compares_float32_samples_as_real_numbers() -> None:
    rng = np.random.default_rng(31)
    magnitude = np.abs(rng.standard_normal(2000)).astype(np.float32)
    for value in magnitude[:50].astype(np.float64):
        below, above = np.nextafter(value, 0.0), np.nextafter(value, 1.0)
        for threshold in (value, below, above, (value + float(np.nextafter(
                np.float32(value), np.float32(1)))) / 2):
            np.testing.assert_array_equal(peaks._at_least(magnitude, threshold),
                                          magnitude.astype(np.float64) >= threshold)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_true_peak_fast_path_is_the_envelope_maximum(dtype) -> None:
    rng = np.random.default_rng(32)
    for seed in range(4):
        x = 0.3 * speech_like(0.5, rng)
        x = (x + 0.01 * rng.standard_normal(len(x))).astype(dtype)
        if seed % 2:
            x[[0, 5, len(x) - 1]] = 0.6  # peaks at the very edges (zero context beyond)
        magnitude = np.abs(x)
        peak = float(magnitude.max())
        full = true_peak_envelope(x.astype(np.float64), floor=0.0).max()  # every sample
        for floor in (peak, 0.7 * peak, 0.2 * peak, 2.0 * peak):
            fast = peaks._true_peak(x, magnitude, floor)
            assert fast == float(true_peak_envelope(x.astype(np.float64), floor).max())
            if floor <= peak:
                assert fast == pytest.approx(full, rel=1e-12)


def test_plain_gain_normalisation_is_the_float64_product_rounded_once() -> None:
    rng = np.random.default_rng(33)
    x = (0.05 * speech_like(1.0, rng)).astype(np.float32)
    lufs = measure_loudness(x, RATE)
    out, after, true_peak = peaks.normalize_to_target(x, RATE, -20.0, -1.0, lufs)
    gain = 10.0 ** ((-20.0 - lufs) / 20.0)
    assert out.dtype == np.float32 and after == -20.0
    np.testing.assert_array_equal(out, (x.astype(np.float64) * gain).astype(np.float32))
    envelope = true_peak_envelope(x.astype(np.float64), floor=0.0)
    assert true_peak == pytest.approx(20 * np.log10(gain * envelope.max()), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_normalisation_of_float32_samples_is_that_of_their_float64_values(seed: int) -> None:
    x = peaky_clip(seed).astype(np.float32)  # the limiter works on these
    for target in (-20.0, -30.0):
        lufs = measure_loudness(x, RATE)
        single = peaks.normalize_to_target(x, RATE, target, -1.0, lufs)
        double = peaks.normalize_to_target(x.astype(np.float64), RATE, target, -1.0, lufs)
        np.testing.assert_array_equal(single[0], double[0])
        assert single[1:] == double[1:]


def test_limiter_gains_for_a_gain_are_those_of_the_scaled_envelope() -> None:
    for seed in range(3):
        x = peaky_clip(seed)
        ceiling, gain = 10 ** (-1 / 20), 10 ** (9 / 20)
        envelope = true_peak_envelope(x, ceiling / gain)
        scaled = peaks._limiter_gains(envelope * gain, ceiling, RATE)
        assert scaled
        for (start, dip), (start_2, dip_2) in zip(
                scaled, peaks._limiter_gains(envelope, ceiling, RATE, gain), strict=True):
            assert start == start_2
            np.testing.assert_array_equal(dip, dip_2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_interpolated_peaks_are_those_of_the_zero_padded_windows(dtype) -> None:
    matrix, _ = peaks._interpolation_matrix()
    rng = np.random.default_rng(34)
    for length in (1, 5, 12, 13, 14, 100, 3000):
        x = rng.standard_normal(length).astype(dtype)
        padded_x = np.zeros(length + 12)
        padded_x[6:-6] = x
        windows = np.lib.stride_tricks.sliding_window_view(padded_x, 13)  # the former way
        for candidates in (np.arange(length), np.unique(rng.integers(0, length, 7)),
                           np.unique(np.r_[0, length - 1])):
            expected = np.abs(matrix.T @ windows[candidates].T).max(axis=0)
            np.testing.assert_array_equal(peaks._interpolated_peaks(x, candidates),
                                          expected)

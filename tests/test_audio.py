"""Pure audio functions: header probing, decoding checks, both resamplers, FLAC encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from conftest import encode, tone
from parla.audio import decode as audio
from parla.errors import RowRejected


def _reason(data: bytes, expected_format: str | None = None, **kwargs) -> str:
    with pytest.raises(RowRejected) as raised:
        audio.decode_audio(data, expected_format, **kwargs)
    return raised.value.reason


def _float_wav(samples: np.ndarray, sample_rate: int = 48000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


# --- probing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sample_rate", [48000, 44100, 24000, 16000])
def test_probe_mp3_reads_the_length_header(mp3_bytes, sample_rate: int) -> None:
    info = audio.probe_mp3(mp3_bytes(2.0, sample_rate))
    assert info is not None
    assert (info.sample_rate, info.channels, info.has_length_header) == (sample_rate, 1, True)
    assert info.duration == pytest.approx(2.0, abs=0.03)
    assert not audio.probe_mp3(mp3_bytes(2.0, sample_rate), walk_frames=True).truncated


def test_probe_mp3_walks_frames_to_find_a_cut_frame(mp3_bytes) -> None:
    data = mp3_bytes(2.0)
    whole = audio.probe_mp3(data, walk_frames=True)
    cut = audio.probe_mp3(data[:len(data) // 2 + 17], walk_frames=True)
    assert not whole.truncated and cut.truncated


def test_probe_mp3_rejects_other_bytes() -> None:
    assert audio.probe_mp3(encode(tone(0.5), fmt="WAV")) is None
    assert audio.probe_mp3(bytes(range(256)) * 8) is None


@pytest.mark.parametrize("fmt", ["MP3", "WAV", "FLAC"])
def test_probe_duration_of_each_container(fmt: str) -> None:
    assert audio.probe_duration(encode(tone(1.5), fmt=fmt)) == pytest.approx(1.5, abs=0.03)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty_file"),
    (b"definitely not audio" * 10, "unreadable_header"),
    (b"\xff\xfb" + bytes(300), "unreadable_header"),  # an MP3 sync word, then nothing valid
])
def test_probe_duration_of_bad_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(RowRejected) as raised:
        audio.probe_duration(data)
    assert raised.value.reason == reason


@pytest.mark.parametrize(("fmt", "kind"), [("MP3", "mp3"), ("WAV", "wav"), ("FLAC", "flac"),
                                          ("OGG", "ogg")])
def test_sniff_format(fmt: str, kind: str) -> None:
    assert audio.sniff_format(encode(tone(0.3), fmt=fmt)) == kind


def test_sniff_format_of_unknown_bytes() -> None:
    assert audio.sniff_format(b"") == "unknown"
    assert audio.sniff_format(b"hello world") == "unknown"


# --- decoding and its checks -----------------------------------------------------------------

def test_decode_mp3_at_48k(mp3_bytes) -> None:
    samples, rate = audio.decode_audio(mp3_bytes(2.0), "mp3")
    assert rate == 48000 and samples.dtype == np.float32 and samples.ndim == 1
    assert samples.size / rate == pytest.approx(2.0, abs=0.06)
    assert 0.2 < np.abs(samples).max() < 0.4  # the 0.3 tone, not garbage


def test_decode_mixes_stereo_down_to_mono() -> None:
    left = tone(1.0)
    samples, rate = audio.decode_audio(_float_wav(np.stack([left, 0.5 * left], axis=1)), "wav")
    assert rate == 48000 and samples.shape == left.shape
    np.testing.assert_allclose(samples, 0.75 * left, atol=1e-6)


@pytest.mark.parametrize("extra", [0, 1, 17, 333])
def test_truncated_mp3_is_rejected(mp3_bytes, extra: int) -> None:
    # cut anywhere: inside a frame (the walk finds it) or between frames (the decoded length
    # falls short of the length header); libsndfile itself decodes both without an error
    data = mp3_bytes(3.0)
    assert _reason(data[:len(data) // 2 + extra], "mp3") == "truncated"


def test_nominal_duration_catches_a_short_decode() -> None:
    wav = encode(tone(1.0), fmt="WAV")
    assert _reason(wav, "wav", nominal_duration=2.0) == "truncated"
    samples, _ = audio.decode_audio(wav, "wav", nominal_duration=1.05)  # within the tolerance
    assert samples.size == 48000


def test_zero_length_file() -> None:
    assert _reason(b"", "mp3") == "empty_file"


def test_wav_bytes_named_mp3(mp3_bytes) -> None:
    wav = encode(tone(1.0), fmt="WAV")
    assert _reason(wav, "mp3") == "format_mismatch"
    assert _reason(mp3_bytes(1.0), "wav") == "format_mismatch"
    assert audio.decode_audio(wav, "wav")[0].size == 48000  # the same bytes, named right


@pytest.mark.parametrize("fmt", ["MP3", "WAV"])
def test_silence_is_rejected(fmt: str) -> None:
    assert _reason(encode(np.zeros(48000, dtype=np.float32), fmt=fmt)) == "silent"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_are_rejected(bad: float) -> None:
    samples = tone(1.0)
    samples[1000:1010] = bad
    assert _reason(_float_wav(samples), "wav") == "non_finite"


def test_a_wav_without_frames_is_empty_audio() -> None:
    assert _reason(encode(np.zeros(0, dtype=np.float32), fmt="WAV"), "wav") == "empty_audio"


def test_undecodable_bytes() -> None:
    assert _reason(b"definitely not audio" * 50, "mp3") == "undecodable"


def test_check_samples_accepts_quiet_but_real_audio() -> None:
    audio.check_samples(tone(0.5, amplitude=0.001), 48000, nominal_duration=0.5)
    with pytest.raises(RowRejected, match="silent"):
        audio.check_samples(tone(0.5, amplitude=1e-5), 48000)


# --- resampling ------------------------------------------------------------------------------

def _peak_hz(samples: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / sample_rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("method", ["soxr", "scipy"])
@pytest.mark.parametrize(("source_rate", "target_rate"),
                         [(48000, 24000), (44100, 24000), (16000, 24000), (48000, 22050)])
def test_resamplers_keep_length_and_pitch(method: str, source_rate: int,
                                          target_rate: int) -> None:
    samples = tone(1.3, source_rate, frequency=1000.0)
    out = audio.resample(samples, source_rate, target_rate, method)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - samples.size * target_rate / source_rate) <= 1
    # the content plays at the same speed: a 1 kHz tone is still 1 kHz at the new rate
    assert _peak_hz(out, target_rate) == pytest.approx(1000.0, abs=2.0)
    middle = slice(out.size // 4, 3 * out.size // 4)
    assert np.abs(out[middle]).max() == pytest.approx(0.3, rel=0.02)


def test_both_resamplers_agree() -> None:
    samples = tone(1.0, 48000, frequency=440.0) + tone(1.0, 48000, frequency=3000.0, amplitude=0.1)
    soxr_out = audio.resample(samples, 48000, 24000, "soxr")
    scipy_out = audio.resample(samples, 48000, 24000, "scipy")
    middle = slice(1000, 23000)
    assert np.corrcoef(soxr_out[middle], scipy_out[middle])[0, 1] > 0.999


def test_resample_to_the_same_rate_is_a_no_op() -> None:
    samples = tone(0.5, 24000)
    np.testing.assert_array_equal(audio.resample(samples, 24000, 24000, "soxr"), samples)


def test_unknown_resampler() -> None:
    with pytest.raises(ValueError, match="unknown resampler"):
        audio.resample(tone(0.1), 48000, 24000, "linear")


# --- FLAC ------------------------------------------------------------------------------------

def test_flac_is_16_bit_mono_and_round_trips() -> None:
    samples = tone(1.0, 24000)
    data = audio.encode_flac(samples, 24000)
    info = sf.info(io.BytesIO(data))
    assert data[:4] == b"fLaC"
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (24000, 1, "PCM_16",
                                                                           24000)
    decoded, rate = audio.decode_flac(data)
    assert rate == 24000
    np.testing.assert_allclose(decoded, samples, atol=1 / 32768 + 1e-6)


def test_flac_clips_instead_of_wrapping_around() -> None:
    decoded, _ = audio.decode_flac(audio.encode_flac(np.array([1.5, -1.5, 0.5], np.float32),
                                                     24000))
    assert decoded[0] > 0.99 and decoded[1] < -0.99 and decoded[2] == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flac_samples_match_libsndfiles_own_float_conversion(dtype) -> None:
    """encode_flac converts to int16 itself (faster); the samples must be those libsndfile
    writes from the float samples itself: same rounding (ties included), same clipping."""
    rng = np.random.default_rng(3)
    ties = np.arange(-70000, 70000) * (0.5 / 32768)  # every half step between two codes
    edges = np.array([1.0, -1.0, 1.5, -1.5, 0.99999, -0.99999, 32767.5 / 32768, -32768.5 / 32768,
                      0.0, -0.0])
    for samples in (rng.standard_normal(48000) * 0.2, ties, np.tile(edges, 50),
                    rng.standard_normal(48000) * 3.0):
        samples = samples.astype(dtype)
        reference = io.BytesIO()
        sf.write(reference, np.clip(samples, -1.0, 1.0), 24000, format="FLAC", subtype="PCM_16",
                 compression_level=0.0)
        assert np.array_equal(audio.decode_flac(audio.encode_flac(samples, 24000))[0],
                              audio.decode_flac(reference.getvalue())[0])


def test_reuse_freed_memory_is_safe_to_call_again() -> None:
    import platform

    first, second = audio.reuse_freed_memory(), audio.reuse_freed_memory()
    assert first == second
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first  # glibc's mallopt took every setting

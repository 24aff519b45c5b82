"""libmpg123 called directly: the same samples as libsndfile at the stream's rate, close to
soxr's at half of it, and every bad clip still rejected for its reason."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import encode, speech, tone
from parla.audio import decode as audio
from parla.audio import mpg123
from parla.errors import RowRejected, UsageError
from parla.options import PrepareOptions

# skipped without libmpg123; a failure under PARLA_REQUIRE_SYSTEM_TOOLS=1 (conftest.py)
pytestmark = pytest.mark.needs_system_tool(mpg123.available(),
                                           reason="libmpg123 is not installed")


def _soundfile_decode(data: bytes) -> np.ndarray:
    return audio.decode_audio(data, "mp3")[0]


def _relative_error_db(result: np.ndarray, reference: np.ndarray) -> float:
    assert result.shape == reference.shape
    return 10 * np.log10(np.sum((result - reference) ** 2) / np.sum(reference ** 2))


def test_decode_at_the_streams_rate_is_libsndfiles_decode(mp3_bytes) -> None:
    data = mp3_bytes(2.0)
    samples, rate = mpg123.decode_mp3(data)
    reference = _soundfile_decode(data)
    assert rate == 48000 and samples.dtype == np.float32
    # the same library underneath; a different build of it may round its last bits otherwise
    np.testing.assert_allclose(samples, reference, atol=1e-5)


@pytest.mark.parametrize(("divisor", "rate"), [(2, 24000), (4, 12000)])
def test_down_sampled_decode_is_close_to_soxr(divisor: int, rate: int) -> None:
    data = encode(speech("Bon dia a tothom.", 48000))
    samples, decoded_rate = mpg123.decode_mp3(data, divisor)
    full = _soundfile_decode(data)
    assert decoded_rate == rate
    # libmpg123 keeps every divisor-th sample of the stream before the gapless trim: when the
    # encoder delay (1105 samples here) is not a multiple of the divisor, its grid is that many
    # 48 kHz samples earlier than soxr's. On the same grid the two agree: their anti-alias
    # filters differ only near the new Nyquist frequency, where espeak-ng's speech has nothing.
    errors = [_relative_error_db(samples, audio.resample(
        np.concatenate([np.zeros(shift, np.float32), full])[:full.size], 48000, rate, "soxr"))
        for shift in range(divisor)]
    assert min(errors) < -40


def test_down_sampling_removes_what_the_new_rate_cannot_hold() -> None:
    # a 5 kHz tone survives 48 -> 24 kHz; a 15 kHz one must not alias down to 9 kHz
    low, _ = mpg123.decode_mp3(encode(tone(1.0, frequency=5000.0)), 2)
    high, _ = mpg123.decode_mp3(encode(tone(1.0, frequency=15000.0)), 2)
    assert np.sqrt(np.mean(low ** 2)) > 0.15
    assert np.sqrt(np.mean(high ** 2)) < 0.003


def test_stereo_is_mixed_to_mono() -> None:
    left = tone(1.0)
    data = encode(np.stack([left, 0.5 * left], axis=1))
    samples, _ = mpg123.decode_mp3(data)
    reference = sf.read(__import__("io").BytesIO(data), dtype="float32")[0].mean(axis=1)
    np.testing.assert_allclose(samples, reference, atol=1e-4)


def test_one_handle_decodes_clip_after_clip(mp3_bytes) -> None:
    first, second = mp3_bytes(1.0), mp3_bytes(3.0)
    for data, seconds in ((first, 1.0), (second, 3.0), (first, 1.0)):
        samples, rate = mpg123.decode_mp3(data, 2, expected_samples=100)  # buffer grows
        assert samples.size / rate == pytest.approx(seconds, abs=0.03)


def test_bytes_that_are_not_mp3_raise() -> None:
    with pytest.raises(mpg123.Mpg123Error):
        mpg123.decode_mp3(b"\x00" * 4000)


def test_decode_audio_with_mpg123_keeps_every_check(mp3_bytes) -> None:
    data = mp3_bytes(3.0)
    samples, rate = audio.decode_audio(data, "mp3", mpg123_rate=24000)
    assert rate == 24000 and samples.size / rate == pytest.approx(3.0, abs=0.03)
    for bad, reason in ((data[:len(data) // 2], "truncated"),
                        (encode(tone(1.0), fmt="WAV"), "format_mismatch"),
                        (encode(np.zeros(48000, np.float32)), "silent"),
                        (b"\xff\xfb" + bytes(300), "undecodable")):
        with pytest.raises(RowRejected) as raised:
            audio.decode_audio(bad, "mp3", mpg123_rate=24000)
        assert raised.value.reason == reason


def test_a_rate_it_cannot_make_is_decoded_at_the_streams_rate(mp3_bytes) -> None:
    samples, rate = audio.decode_audio(mp3_bytes(1.0, 44100), "mp3", mpg123_rate=24000)
    assert rate == 44100
    assert audio.resample(samples, rate, 24000, "mpg123").size == pytest.approx(24000, abs=50)


def test_auto_means_mpg123_where_it_loads(monkeypatch) -> None:
    assert audio.resolve_resampler("auto") == "mpg123"
    assert audio.resolve_resampler("soxr") == "soxr"
    monkeypatch.setattr(mpg123, "available", lambda: False)
    assert audio.resolve_resampler("auto") == "soxr"


def test_a_worker_without_libmpg123_says_so(monkeypatch) -> None:
    from parla.stages.prepare_worker import ShardPreparer

    monkeypatch.setattr(mpg123, "available", lambda: False)
    options = PrepareOptions(datasets=("x",), output_dir="o", resampler="mpg123")
    with pytest.raises(UsageError, match="libmpg123"):
        ShardPreparer(options, {}, {})


def test_two_streams_in_one_file_decode_as_libsndfile_decodes_them(mp3_bytes) -> None:
    # libmpg123 would go on decoding across the change of format (its "Frankenstein" streams)
    # and report the last rate only; libsndfile stops where the first stream ends
    for glued in (mp3_bytes(1.5) + mp3_bytes(1.5, 44100), mp3_bytes(1.5) + mp3_bytes(1.5)):
        reference = _soundfile_decode(glued)
        samples, rate = audio.decode_audio(glued, "mp3", mpg123_rate=48000)
        assert rate == 48000
        np.testing.assert_allclose(samples, reference, atol=1e-5)
        half, half_rate = audio.decode_audio(glued, "mp3", mpg123_rate=24000)
        assert half_rate == 24000 and abs(half.size - reference.size // 2) <= 1


def _with_xing_frames(data: bytes, frames: int) -> bytes:
    position, header = audio._first_frame(data)
    tag = position + 4 + header.side_info_length
    assert data[tag:tag + 4] in (b"Xing", b"Info")
    return data[:tag + 8] + frames.to_bytes(4, "big") + data[tag + 12:]


@pytest.mark.parametrize("mpg123_rate", [None, 24000])
def test_a_header_claiming_more_than_the_bytes_hold_is_rejected(mp3_bytes, mpg123_rate) -> None:
    # 20 million frames would be 13 hours: both decoders would try to allocate it all first
    lying = _with_xing_frames(mp3_bytes(1.0), 20_000_000)
    with pytest.raises(RowRejected) as raised:
        audio.decode_audio(lying, "mp3", mpg123_rate=mpg123_rate)
    assert raised.value.reason == "truncated" and "cannot hold" in raised.value.detail


def test_prepare_without_libmpg123_says_so_before_any_work(monkeypatch, tmp_path) -> None:
    from parla.stages.prepare import prepare

    monkeypatch.setattr(mpg123, "available", lambda: False)
    options = PrepareOptions(datasets=(str(tmp_path / "nowhere"),), output_dir=str(tmp_path / "o"),
                             resampler="mpg123")
    with pytest.raises(UsageError, match="libmpg123"):
        prepare(options)
    assert not (tmp_path / "o").exists()


def test_a_decoders_handle_is_deleted_with_it() -> None:
    import gc

    real = mpg123._library()
    deleted = []

    class Recording:  # the library, with mpg123_delete recorded before it runs
        def __getattr__(self, name):
            return getattr(real, name)

        def mpg123_delete(self, handle):
            deleted.append(handle)
            real.mpg123_delete(handle)

    decoder = mpg123._Decoder(Recording(), 1)
    handle = decoder.handle
    del decoder
    gc.collect()
    assert deleted == [handle]

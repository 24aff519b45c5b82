"""libFLAC called directly: the samples libsndfile would store, without the MD5 signature."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from parla.audio import decode as audio
from parla.audio import flac

# skipped without libFLAC; a failure under PARLA_REQUIRE_SYSTEM_TOOLS=1 (conftest.py)
pytestmark = pytest.mark.needs_system_tool(flac.available(),
                                           reason="libFLAC is not installed")


def _libsndfile_flac(pcm: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, pcm, sample_rate, format="FLAC", subtype="PCM_16", compression_level=0.0)
    return buffer.getvalue()


@pytest.mark.parametrize("sample_rate", [24000, 16000, 48000])
def test_round_trip_is_lossless(sample_rate: int) -> None:
    pcm = (np.random.default_rng(1).standard_normal(sample_rate) * 3000).astype(np.int16)
    data = flac.encode_pcm16(pcm, sample_rate)
    decoded, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert data[:4] == b"fLaC" and rate == sample_rate
    assert np.array_equal(decoded, pcm)


def test_same_stream_as_libsndfile_but_the_signature() -> None:
    pcm = audio.to_pcm16(np.sin(np.arange(48000) / 7.0).astype(np.float32) * 0.5)
    ours, theirs = flac.encode_pcm16(pcm, 24000), _libsndfile_flac(pcm, 24000)
    assert len(ours) == len(theirs)
    # STREAMINFO follows "fLaC" and a 4-byte block header; its last 16 bytes are the MD5
    assert ours[26:42] == bytes(16) and theirs[26:42] != bytes(16)
    assert ours[8:26] == theirs[8:26]  # block sizes, frame sizes, rate, channels, length
    start = len(ours) - len(pcm) // 4  # the frames at the end: the same bits
    assert ours[start:] == theirs[start:]


def test_one_scratch_file_serves_clip_after_clip() -> None:
    long, short = (np.arange(n, dtype=np.int16) % 200 for n in (50000, 3000))
    for pcm in (long, short, long):
        assert np.array_equal(sf.read(io.BytesIO(flac.encode_pcm16(pcm, 24000)),
                                      dtype="int16")[0], pcm)


def test_encode_flac_falls_back_to_libsndfile(monkeypatch) -> None:
    samples = np.linspace(-0.5, 0.5, 2400, dtype=np.float32)
    monkeypatch.setattr(flac, "available", lambda: False)
    assert audio.encode_flac(samples, 24000) == _libsndfile_flac(audio.to_pcm16(samples), 24000)


def test_a_stream_longer_than_the_file_buffer_is_whole() -> None:
    # noise does not compress: about 2.9 MB, past the 1 MiB buffer the FILE writes through
    pcm = (np.random.default_rng(2).standard_normal(24000 * 60) * 8000).astype(np.int16)
    data = flac.encode_pcm16(pcm, 24000)
    assert len(data) > 2 * flac._STREAM_BUFFER_BYTES
    assert np.array_equal(sf.read(io.BytesIO(data), dtype="int16")[0], pcm)


def test_the_encoder_is_named_with_its_version() -> None:
    assert flac.version().count(".") >= 1
    assert audio.flac_encoder() == f"libFLAC {flac.version()}"
    assert flac.version().encode() in flac.encode_pcm16(np.zeros(100, np.int16), 24000)


def test_a_threads_scratch_file_closes_when_the_thread_ends() -> None:
    import gc
    import os
    import threading

    def encode() -> None:
        flac.encode_pcm16(np.zeros(1000, np.int16), 24000)

    encode()  # this thread's own, kept
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(4):
        thread = threading.Thread(target=encode)
        thread.start()
        thread.join()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


def test_without_libflac_the_encoder_is_named_with_libsndfiles_libflac(monkeypatch) -> None:
    stream = flac.encode_pcm16(np.zeros(100, np.int16), 24000)
    assert audio.flac_vendor(stream).startswith(f"reference libFLAC {flac.version()}")
    monkeypatch.setattr(flac, "available", lambda: False)
    name = audio.flac_encoder()
    assert name.startswith(f"libsndfile {sf.__libsndfile_version__}, reference libFLAC ")
    assert audio.flac_vendor(b"fLaC") == ""  # no metadata at all

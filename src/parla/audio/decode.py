"""Pure audio functions: probe a clip's length from its header, decode, check, resample, encode.

Nothing here touches files or processes: bytes in, numpy arrays or bytes out. Errors a bad clip can
cause are raised as `RowRejected` with a short stable reason, so the stage can reject the row
and carry on.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from parla.errors import RowRejected

# --- MP3 headers (no decoding) ---------------------------------------------------------------

_MP3_BITRATES_KBPS = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 layer III
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2/2.5 layer III
}
_MP3_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True)
class Mp3Info:
    sample_rate: int
    channels: int
    duration: float  # seconds, from the Xing/Info/VBRI frame count, else estimated from the size
    has_length_header: bool  # False: CBR estimate, may be off by a frame or two
    truncated: bool = False  # only known when the frames were walked: last frame is incomplete


@dataclass(frozen=True)
class _FrameHeader:
    version_bits: int
    sample_rate: int
    bitrate_kbps: int
    padding: int
    channels: int

    @property
    def samples_per_frame(self) -> int:
        return 1152 if self.version_bits == 3 else 576

    @property
    def length(self) -> int:
        factor = 144 if self.version_bits == 3 else 72
        return factor * self.bitrate_kbps * 1000 // self.sample_rate + self.padding

    @property
    def side_info_length(self) -> int:
        if self.version_bits == 3:
            return 17 if self.channels == 1 else 32
        return 9 if self.channels == 1 else 17


def _parse_frame_header(data: bytes, pos: int) -> _FrameHeader | None:
    if pos + 4 > len(data) or data[pos] != 0xFF or (data[pos + 1] & 0xE0) != 0xE0:
        return None
    version_bits = (data[pos + 1] >> 3) & 0x3
    layer_bits = (data[pos + 1] >> 1) & 0x3
    bitrate_index = data[pos + 2] >> 4
    rate_index = (data[pos + 2] >> 2) & 0x3
    if version_bits == 1 or layer_bits != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None  # reserved values, or not layer III (all Common Voice clips are layer III)
    table = _MP3_BITRATES_KBPS[1 if version_bits == 3 else 2]
    return _FrameHeader(
        version_bits=version_bits,
        sample_rate=_MP3_SAMPLE_RATES[version_bits][rate_index],
        bitrate_kbps=table[bitrate_index],
        padding=(data[pos + 2] >> 1) & 0x1,
        channels=1 if (data[pos + 3] >> 6) == 3 else 2,
    )


def _skip_id3v2(data: bytes) -> int:
    if len(data) >= 10 and data[:3] == b"ID3":
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        footer = 10 if data[5] & 0x10 else 0
        return 10 + size + footer
    return 0


def _first_frame(data: bytes) -> tuple[int, _FrameHeader] | None:
    """Position and header of the first frame, confirmed by the frame that follows it."""
    pos = _skip_id3v2(data)
    end = min(len(data), pos + 64 * 1024)
    while pos < end:
        header = _parse_frame_header(data, pos)
        if header is not None:
            following = pos + header.length
            if following >= len(data) or _parse_frame_header(data, following) is not None:
                return pos, header
        pos += 1
    return None


def _length_header_frames(data: bytes, pos: int, header: _FrameHeader) -> tuple[int, int] | None:
    """(frame count, gapless samples to drop) from a Xing/Info or VBRI tag in the first frame."""
    xing = pos + 4 + header.side_info_length
    tag = data[xing:xing + 4]
    if tag in (b"Xing", b"Info"):
        flags = int.from_bytes(data[xing + 4:xing + 8], "big")
        if not flags & 0x1:
            return None
        frames = int.from_bytes(data[xing + 8:xing + 12], "big")
        offset = xing + 8 + 4 + (4 if flags & 0x2 else 0) + (100 if flags & 0x4 else 0) + (
            4 if flags & 0x8 else 0)
        gapless = 0
        if data[offset:offset + 4] == b"LAME" and offset + 24 <= len(data):
            raw = int.from_bytes(data[offset + 21:offset + 24], "big")
            gapless = (raw >> 12) + (raw & 0xFFF)  # encoder delay + end padding
        return frames, gapless
    vbri = pos + 4 + 32
    if data[vbri:vbri + 4] == b"VBRI":
        return int.from_bytes(data[vbri + 14:vbri + 18], "big"), 0
    return None


def _count_frames(data: bytes, pos: int) -> tuple[int, bool]:
    """Walk the frame headers: (complete frames, whether the last frame is cut short)."""
    frames = 0
    size = len(data)
    while pos + 4 <= size:
        header = _parse_frame_header(data, pos)
        if header is None:
            break  # ID3v1 tag or trailing junk
        if pos + header.length > size:
            return frames, True
        frames += 1
        pos += header.length
    return frames, False


def probe_mp3(data: bytes, walk_frames: bool = False) -> Mp3Info | None:
    """Length of an MP3 from its headers without decoding; None if the bytes are not MP3.

    Without a Xing/Info/VBRI length header the duration is estimated from the size (constant
    bitrate), or counted exactly when ``walk_frames`` (slower; also detects a cut-off last frame).
    """
    first = _first_frame(data)
    if first is None:
        return None
    pos, header = first
    tagged = _length_header_frames(data, pos, header)
    truncated = False
    if tagged is not None:
        frames, gapless = tagged
        samples = max(frames * header.samples_per_frame - gapless, 0)
        if walk_frames:
            _, truncated = _count_frames(data, pos + header.length)
    elif walk_frames:
        frames, truncated = _count_frames(data, pos)
        samples = frames * header.samples_per_frame
    else:
        samples = round((len(data) - pos) / header.length * header.samples_per_frame)
    return Mp3Info(header.sample_rate, header.channels, samples / header.sample_rate,
                   has_length_header=tagged is not None, truncated=truncated)


def sniff_format(data: bytes) -> str:
    """Container of audio bytes from their magic numbers: mp3, wav, flac, ogg, or unknown."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0):
        return "mp3"
    return "unknown"


def probe_duration(data: bytes) -> float:
    """Duration in seconds from the header only; raises RowRejected when unreadable."""
    if not data:
        raise RowRejected("empty_file")
    kind = sniff_format(data)
    if kind == "mp3":
        info = probe_mp3(data)
        if info is None:
            raise RowRejected("unreadable_header", "no MP3 frame found")
        return info.duration
    try:
        return sf.info(io.BytesIO(data)).duration
    except (sf.LibsndfileError, RuntimeError) as error:
        raise RowRejected("unreadable_header", libsndfile_message(error)) from None


_OBJECT_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def libsndfile_message(error: BaseException) -> str:
    """libsndfile's own message: ``str(error)`` names the BytesIO by its memory address, which
    would make rejects.jsonl differ from run to run."""
    detail = getattr(error, "error_string", None) or _OBJECT_ADDRESS.sub("", str(error))
    return detail.strip()[:200]


# --- decode, check, resample, encode ---------------------------------------------------------

_MIN_MP3_BYTES_PER_S = 1000  # 8 kb/s, layer III's lowest bitrate: a header claiming more is lying
# MP3s without a length header decode a frame or two (25-50 ms) off their nominal length.
LENGTH_TOLERANCE_S = 0.1
SILENCE_PEAK = 1e-4  # below -80 dBFS everywhere: nothing was recorded


def _decode_with_soundfile(data: bytes) -> tuple[np.ndarray, int]:
    with decoder_messages_to_log():
        samples, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples, sample_rate


def _decode_with_mpg123(data: bytes, info: Mp3Info, rate: int) -> tuple[np.ndarray, int] | None:
    """libmpg123's decode at ``rate`` where it can make it (else at the stream's rate), or None
    when libmpg123 cannot decode the bytes."""
    from parla.audio import mpg123

    divisor = info.sample_rate // rate if rate and info.sample_rate % rate == 0 else 1
    if divisor not in mpg123.DOWN_SAMPLE_FACTORS:
        divisor = 1
    try:
        with decoder_messages_to_log():  # QUIET silences its warnings, not all of its errors
            return mpg123.decode_mp3(data, divisor, round(info.duration * info.sample_rate))
    except mpg123.Mpg123Error:
        return None


def _decode_with_av(data: bytes) -> tuple[np.ndarray, int]:
    import av  # the fallback decoder: only imported for what libsndfile cannot read

    chunks = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono")
        sample_rate = stream.rate
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        raise ValueError("no audio frames")
    return np.concatenate(chunks).astype(np.float32)[:, None], sample_rate


def decode_audio(data: bytes, expected_format: str | None = None,
                 nominal_duration: float | None = None,
                 mpg123_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode bytes to mono float32 and check that what came out is a whole, valid clip.

    ``expected_format`` (from the file name: "mp3", "wav", "flac") must match the bytes: libsndfile
    happily decodes WAV bytes named .mp3, which means the file is not what the dataset says.
    ``nominal_duration`` (clip_durations.tsv, or the MP3 length header) catches truncated files,
    which libsndfile decodes without any error.
    With ``mpg123_rate``, MP3 is decoded by libmpg123 itself (`audio.mpg123`), straight at that
    rate when it is the stream's rate divided by 2 or 4 and at the stream's rate otherwise; what
    libmpg123 cannot decode goes to libsndfile, which rejects it or not as it would anyway.
    """
    if not data:
        raise RowRejected("empty_file")
    kind = sniff_format(data)
    if expected_format and kind != "unknown" and kind != expected_format:
        raise RowRejected("format_mismatch", f"named .{expected_format} but holds {kind}")
    if kind == "mp3":
        info = probe_mp3(data)
        if info is None:
            raise RowRejected("undecodable", "no MP3 frame found")
        if info.duration > len(data) / _MIN_MP3_BYTES_PER_S + 1.0:  # before any allocation
            raise RowRejected("truncated", f"the header says {info.duration:.0f}s, which "
                              f"{len(data)} bytes cannot hold")
        if nominal_duration is None and info.has_length_header:
            nominal_duration = info.duration
        if nominal_duration is None:
            # no length to compare the decoded audio with: walk the frames (slower) to see
            # whether the last one is cut short
            if probe_mp3(data, walk_frames=True).truncated:  # type: ignore[union-attr]
                raise RowRejected("truncated", "last MP3 frame is cut short")
        decoded = None if mpg123_rate is None else _decode_with_mpg123(data, info, mpg123_rate)
        if decoded is not None:
            check_samples(decoded[0], decoded[1], nominal_duration)
            return decoded
    try:
        samples, sample_rate = _decode_with_soundfile(data)
    except (sf.LibsndfileError, RuntimeError):
        try:
            samples, sample_rate = _decode_with_av(data)
        except Exception as error:  # PyAV raises many types; any of them means "cannot decode"
            raise RowRejected("undecodable", type(error).__name__) from None
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    check_samples(mono, sample_rate, nominal_duration)
    return mono, sample_rate


def check_samples(samples: np.ndarray, sample_rate: int,
                  nominal_duration: float | None = None) -> None:
    """Reject decoded audio that cannot be training data."""
    if samples.size == 0:
        raise RowRejected("empty_audio")
    if not np.isfinite(samples).all():
        raise RowRejected("non_finite", "NaN or infinite samples")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise RowRejected("silent", "no signal above -80 dBFS")
    if nominal_duration is not None:
        decoded = samples.size / sample_rate
        if decoded < nominal_duration - max(LENGTH_TOLERANCE_S, 0.02 * nominal_duration):
            raise RowRejected("truncated",
                                   f"decoded {decoded:.2f}s of {nominal_duration:.2f}s")


def resolve_resampler(method: str) -> str:
    """``auto`` is ``mpg123`` where the libmpg123 library loads, else ``soxr``."""
    if method != "auto":
        return method
    from parla.audio import mpg123

    return "mpg123" if mpg123.available() else "soxr"


def resample(samples: np.ndarray, source_rate: int, target_rate: int,
             method: str = "soxr") -> np.ndarray:
    """Resample mono float32 audio; ``scipy`` is the polyphase filter, for parity checks.

    ``mpg123`` (MP3 is decoded at the target rate already, `decode_audio`) resamples whatever
    is left, other formats or rates, with soxr; ``auto`` as `resolve_resampler` says."""
    if source_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    if method in ("soxr", "mpg123", "auto"):
        import soxr

        return soxr.resample(samples, source_rate, target_rate, quality="HQ").astype(
            np.float32, copy=False)
    if method == "scipy":
        from scipy.signal import resample_poly

        divisor = math.gcd(source_rate, target_rate)
        return resample_poly(samples, target_rate // divisor, source_rate // divisor).astype(
            np.float32, copy=False)
    raise ValueError(f"unknown resampler {method!r}")


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def reuse_freed_memory() -> bool:
    """Ask the C allocator (glibc) to keep freed memory for reuse in this process.

    Every clip makes a few dozen arrays of about 1 MB (decoded samples, filter outputs, FLAC
    buffers). By default glibc gives such blocks back to the system when freed, or trims them
    off the heap, so the next clip's arrays start as fresh pages, and the page faults cost more
    than a millisecond per clip. Keeping up to 64 MB for reuse makes them cost nothing; the
    process holds that much more at most. Returns False where there is no glibc (nothing done).
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(parameter, value) == 1 for parameter, value in (
        (_M_MMAP_THRESHOLD, 16 << 20),  # blocks up to 16 MB come from the heap...
        (_M_TRIM_THRESHOLD, 64 << 20),  # ...which is trimmed only past 64 MB free
        (_M_TOP_PAD, 16 << 20)))


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float samples as int16, rounded and clipped exactly as libsndfile converts them (x * 32768,
    to nearest, full scale clipped), so handing it integers changes no byte of the output."""
    samples = np.asarray(samples)
    exact = samples.dtype if samples.dtype in (np.float32, np.float64) else np.float64
    scaled = np.multiply(samples, 32768.0, dtype=exact)  # in the input's precision, as libsndfile
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    return scaled.astype(np.int16)


def encode_flac(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit FLAC bytes; samples are clipped to [-1, 1] first so nothing wraps around.

    The lowest compression level: 40% faster to encode than the default, files 1% larger. With
    the libFLAC library installed, it encodes without the MD5 signature (`parla.audio.flac`: a third
    faster); else libsndfile does, with it. The samples are the same."""
    from parla.audio import flac

    pcm = to_pcm16(samples)  # int16 in: libsndfile's own float conversion costs a fifth more
    if flac.available():
        return flac.encode_pcm16(pcm, sample_rate)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, sample_rate, format="FLAC", subtype="PCM_16", compression_level=0.0)
    return buffer.getvalue()


def flac_encoder() -> str:
    """Which encoder `encode_flac` uses here, with its libFLAC ("libFLAC 1.4.2", or
    "libsndfile 1.2.2, reference libFLAC 1.4.3 20230623" from the vendor string of a stream it
    writes): their bytes differ (the MD5 signature, the vendor string), so a run records it and
    never mixes two."""
    from parla.audio import flac

    if flac.available():
        return f"libFLAC {flac.version()}"
    stream = encode_flac(np.zeros(16, dtype=np.float32), 24000)
    return f"libsndfile {sf.__libsndfile_version__}, {flac_vendor(stream)}"


def flac_vendor(data: bytes) -> str:
    """The vendor string in a FLAC stream's VORBIS_COMMENT block ("" without one)."""
    position = 4  # past "fLaC"
    while position + 4 <= len(data):
        header, size = data[position], int.from_bytes(data[position + 1:position + 4], "big")
        if header & 0x7F == 4:  # VORBIS_COMMENT: a little-endian length, then the vendor
            length = int.from_bytes(data[position + 4:position + 8], "little")
            return data[position + 8:position + 8 + length].decode("utf-8", "replace")
        if header & 0x80:  # the last metadata block
            break
        position += 4 + size
    return ""


def decode_flac(data: bytes) -> tuple[np.ndarray, int]:
    """Inverse of `encode_flac` (mono float32)."""
    samples, sample_rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, sample_rate


# --- what the C decoders print ---------------------------------------------------------------
# libmpg123 (inside libsndfile) writes warnings such as "Warning: Xing stream size off by more
# than 1%" with fprintf straight to file descriptor 2, under any progress bar. Around a decode,
# fd 2 points at a per-process scratch file (a pipe could fill and block the decoder); what
# landed there goes to the log at debug level.

_scratch: tuple[int, int] | None = None  # (pid, fd): a spawned or forked child makes its own


def _scratch_fd() -> int:
    global _scratch
    if _scratch is None or _scratch[0] != os.getpid():
        handle = tempfile.TemporaryFile(prefix="parla-decoder-messages-")
        _scratch = (os.getpid(), os.dup(handle.fileno()))
        handle.close()
    return _scratch[1]


@contextlib.contextmanager
def decoder_messages_to_log() -> Iterator[None]:
    """``with decoder_messages_to_log(): sf.read(...)``: the C library's stderr lines are
    logged at debug level (logger ``parla.audio``) instead of reaching the terminal."""
    try:
        scratch = _scratch_fd()
        os.ftruncate(scratch, 0)
        saved = os.dup(2)
    except OSError:  # no fd 2, or no temporary folder: let the messages through
        yield
        return
    os.dup2(scratch, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    size = os.fstat(scratch).st_size
    if size:
        from parla.progress import get_logger

        text = os.pread(scratch, min(size, 65536), 0).decode("utf-8", "replace")
        for line in dict.fromkeys(text.splitlines()):
            if line.strip():
                get_logger("audio").debug("decoder: %s", line.strip())

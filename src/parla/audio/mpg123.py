"""MP3 bytes to float32 samples with libmpg123 itself, optionally straight at a half or a quarter
of the stream's rate.

libsndfile decodes MP3 with libmpg123 too, but through a Python read callback called a few
hundred times a clip, which costs about a fifth of the decoding. Here the whole clip is fed in one
call and read out in one call. A change of format inside the clip (two streams glued together)
ends the decode, as it ends libsndfile's (``MPG123_NO_FRANKENSTEIN``). At the stream's own rate
the samples are then the same as libsndfile's, bit for bit, where both use the same libmpg123
version (the soundfile wheel bundles its own).

Down-sampling (``MPG123_DOWN_SAMPLE``) drops the upper half (or three quarters) of MPEG's 32
subbands before the synthesis filterbank and synthesises at the lower rate: a 48 kHz Common Voice
clip comes out at 24 kHz with no resampler, for less than the cost of decoding it at 48 kHz. The
subband filters make the anti-alias filter, so the result is close to, not the same as, soxr's;
docs/QUALITY.md has the comparison (`benchmarks/compare_conditioning.py --decoders`).

The shared library is the system's (Debian/Ubuntu: ``libmpg123-0``, which Debian's libsndfile1
depends on; macOS: ``brew install mpg123``), not the one inside the soundfile wheel: a pip-only
machine may lack it. `available()` says whether it loads. One decoder handle per thread, made on
first use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import weakref

import numpy as np

# mpg123.h
_FLAGS, _DOWN_SAMPLE = 1, 4  # enum mpg123_parms
_MONO_MIX, _QUIET, _GAPLESS, _FORCE_FLOAT = 0x4, 0x20, 0x40, 0x400  # enum mpg123_param_flags
_NO_FRANKENSTEIN = 0x1000000  # libmpg123 >= 1.29; older ones ignore it (see the read loop)
_ENC_FLOAT_32 = 0x200
_MONO = 1
_OK, _NEW_FORMAT, _NEED_MORE, _DONE = 0, -11, -10, -12
_MPEG_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
DOWN_SAMPLE_FACTORS = {1: 0, 2: 1, 4: 2}  # rate divisor -> MPG123_DOWN_SAMPLE value


class Mpg123Error(Exception):
    """libmpg123 could not decode the bytes (its own message)."""


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("mpg123") or "libmpg123.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    handle, size, size_p = ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)
    signatures = {
        "mpg123_init": ([], ctypes.c_int),
        "mpg123_new": ([ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)], handle),
        "mpg123_param": ([handle, ctypes.c_int, ctypes.c_long, ctypes.c_double], ctypes.c_int),
        "mpg123_format_none": ([handle], ctypes.c_int),
        "mpg123_format": ([handle, ctypes.c_long, ctypes.c_int, ctypes.c_int], ctypes.c_int),
        "mpg123_open_feed": ([handle], ctypes.c_int),
        "mpg123_feed": ([handle, ctypes.c_char_p, size], ctypes.c_int),
        "mpg123_read": ([handle, ctypes.c_void_p, size, size_p], ctypes.c_int),
        "mpg123_getformat": ([handle, ctypes.POINTER(ctypes.c_long),
                              ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)],
                             ctypes.c_int),
        "mpg123_close": ([handle], ctypes.c_int),
        "mpg123_delete": ([handle], None),
        "mpg123_strerror": ([handle], ctypes.c_char_p),
        "mpg123_plain_strerror": ([ctypes.c_int], ctypes.c_char_p),
    }
    try:
        for function, (arguments, result) in signatures.items():
            getattr(lib, function).argtypes = arguments
            getattr(lib, function).restype = result
    except AttributeError:  # not libmpg123, or far too old
        return None
    lib.mpg123_init()  # a no-op since 1.27, required before
    return lib


def available() -> bool:
    """Whether the libmpg123 shared library can be loaded."""
    return _library() is not None


class _Decoder:
    """One libmpg123 handle set to mono float output at a fixed down-sampling, and a buffer."""

    def __init__(self, lib: ctypes.CDLL, down_sample: int) -> None:
        error = ctypes.c_int()
        handle = lib.mpg123_new(None, ctypes.byref(error))
        if not handle:
            raise Mpg123Error(lib.mpg123_plain_strerror(error.value).decode())
        self.lib, self.handle = lib, handle
        weakref.finalize(self, lib.mpg123_delete, handle)  # with the thread that made it
        flags = _FORCE_FLOAT | _MONO_MIX | _QUIET | _GAPLESS | _NO_FRANKENSTEIN
        if lib.mpg123_param(handle, _FLAGS, flags, 0.0) != _OK:  # a libmpg123 older than 1.29
            self._check(lib.mpg123_param(handle, _FLAGS, flags & ~_NO_FRANKENSTEIN, 0.0))
        self._check(lib.mpg123_param(handle, _DOWN_SAMPLE, down_sample, 0.0))
        self._check(lib.mpg123_format_none(handle))
        for rate in _MPEG_RATES:  # any stream rate, always one channel of float32
            self._check(lib.mpg123_format(handle, rate, _MONO, _ENC_FLOAT_32))
        self.buffer = np.empty(0, dtype=np.float32)

    def _check(self, code: int) -> None:
        if code != _OK:
            raise Mpg123Error(self.lib.mpg123_strerror(self.handle).decode(errors="replace"))

    def decode(self, data: bytes, expected_samples: int) -> tuple[np.ndarray, int]:
        lib, handle = self.lib, self.handle
        # a header may lie: size for no more than the bytes can hold (8 kb/s at 48 kHz is 48
        # samples a byte); a longer clip grows the buffer below
        needed = min(expected_samples, 48 * len(data)) + 8192
        if self.buffer.size < needed:
            self.buffer = np.empty(needed + 57344, dtype=np.float32)
        self._check(lib.mpg123_open_feed(handle))
        try:
            self._check(lib.mpg123_feed(handle, data, len(data)))
            total, done = 0, ctypes.c_size_t()
            while True:
                if total == self.buffer.size:  # longer than its header said: grow, keep what is in
                    self.buffer = np.concatenate([self.buffer, np.empty_like(self.buffer)])
                code = lib.mpg123_read(handle, self.buffer.ctypes.data + 4 * total,
                                       4 * (self.buffer.size - total), ctypes.byref(done))
                total += done.value // 4
                if code in (_NEED_MORE, _DONE):  # every byte fed has been decoded
                    break
                if code == _NEW_FORMAT and total:  # a second stream: not one clip
                    raise Mpg123Error("the format changes inside the clip")
                if code not in (_OK, _NEW_FORMAT):
                    self._check(code)
            rate, channels, encoding = ctypes.c_long(), ctypes.c_int(), ctypes.c_int()
            self._check(lib.mpg123_getformat(handle, ctypes.byref(rate), ctypes.byref(channels),
                                             ctypes.byref(encoding)))
        finally:
            lib.mpg123_close(handle)
        if total == 0:
            raise Mpg123Error("no audio frames")
        return self.buffer[:total].copy(), int(rate.value)


_decoders = threading.local()


def decode_mp3(data: bytes, rate_divisor: int = 1,
               expected_samples: int = 0) -> tuple[np.ndarray, int]:
    """(mono float32 samples, sample rate) of MP3 bytes, at the stream's rate divided by
    ``rate_divisor`` (1, 2 or 4). ``expected_samples`` (from the header) sizes the buffer.

    Stereo is mixed to mono as (L + R) / 2. Raises Mpg123Error when libmpg123 cannot decode the
    bytes, and RuntimeError when it is not installed (check `available()` first).
    """
    lib = _library()
    if lib is None:
        raise RuntimeError("libmpg123 is not installed")
    decoders = _decoders.__dict__
    if rate_divisor not in decoders:
        decoders[rate_divisor] = _Decoder(lib, DOWN_SAMPLE_FACTORS[rate_divisor])
    return decoders[rate_divisor].decode(bytes(data), expected_samples // rate_divisor)

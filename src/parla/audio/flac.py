"""16-bit mono FLAC bytes with libFLAC itself, without the MD5 signature.

libsndfile encodes FLAC with libFLAC too, with the same settings at compression level 0, but it
always has libFLAC compute the stream's MD5 signature: a third of the encode at level 0. Nothing
that reads a training corpus checks it (the parquet shard is what is written and read whole),
so it is left out; a decoder then skips the check (``flac -t`` says "no MD5 signature"). The
samples are the same either way: FLAC is lossless.

The shared library is the system's (Debian/Ubuntu: ``libflac12``, ``libflac14`` or
``libflac12t64``, which Debian's libsndfile1 depends on), not the one inside the soundfile wheel:
a pip-only machine may lack it. `available()` says whether it loads. The stream is written through a
C ``FILE`` on an in-memory file (libFLAC seeks back to finish the header), one per thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
import weakref

import numpy as np

_INIT_OK = 0  # FLAC__STREAM_ENCODER_INIT_STATUS_OK
_IOFBF = 0  # stdio.h (glibc)
# the FILE's buffer: a 4 s clip's FLAC (about 100 kB) leaves in one write, not in 4 kB ones
_STREAM_BUFFER_BYTES = 1 << 20


@functools.lru_cache(maxsize=1)
def _libraries() -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
    if not hasattr(os, "memfd_create"):
        return None
    try:
        os.close(os.memfd_create("parla-flac-probe"))  # the kernel may still refuse it
    except OSError:
        return None
    lib = None
    for name in (ctypes.util.find_library("FLAC"), "libFLAC.so.14", "libFLAC.so.12",
                 "libFLAC.so.8"):  # find_library needs ldconfig, which a slim image may lack
        if name is not None:
            with contextlib.suppress(OSError):
                lib = ctypes.CDLL(name)
                break
    if lib is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        encoder, unsigned = ctypes.c_void_p, ctypes.c_uint
        lib.FLAC__stream_encoder_new.restype = encoder
        lib.FLAC__stream_encoder_new.argtypes = []
        for setting, kind in (("channels", unsigned), ("bits_per_sample", unsigned),
                              ("sample_rate", unsigned), ("compression_level", unsigned),
                              ("do_md5", ctypes.c_int), ("total_samples_estimate",
                                                         ctypes.c_uint64)):
            function = getattr(lib, f"FLAC__stream_encoder_set_{setting}")
            function.argtypes, function.restype = [encoder, kind], ctypes.c_int
        lib.FLAC__stream_encoder_init_FILE.argtypes = [encoder, ctypes.c_void_p, ctypes.c_void_p,
                                                       ctypes.c_void_p]
        lib.FLAC__stream_encoder_init_FILE.restype = ctypes.c_int
        lib.FLAC__stream_encoder_process_interleaved.argtypes = [encoder, ctypes.c_void_p,
                                                                 unsigned]
        lib.FLAC__stream_encoder_process_interleaved.restype = ctypes.c_int
        lib.FLAC__stream_encoder_finish.argtypes = [encoder]
        lib.FLAC__stream_encoder_finish.restype = ctypes.c_int
        lib.FLAC__stream_encoder_delete.argtypes = [encoder]
        lib.FLAC__stream_encoder_delete.restype = None
        libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
        libc.fdopen.restype = ctypes.c_void_p
        libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        libc.setvbuf.restype = ctypes.c_int
        libc.fseeko.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        libc.fseeko.restype = ctypes.c_int
    except (OSError, AttributeError):  # not libFLAC, or one too old to have these
        return None
    return lib, libc


def available() -> bool:
    """Whether the libFLAC shared library can be loaded."""
    return _libraries() is not None


def version() -> str | None:
    """libFLAC's version ("1.4.2"; it goes into every stream's vendor string), None without it."""
    libraries = _libraries()
    if libraries is None:
        return None
    return ctypes.c_char_p.in_dll(libraries[0], "FLAC__VERSION_STRING").value.decode()


class FlacError(RuntimeError):
    """libFLAC refused to encode (it does not, for valid 16-bit input)."""


class _Scratch:
    """A thread's in-memory file and the buffer its FILE writes through; the file is closed
    when the thread's state goes (the thread ends)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.fd = os.memfd_create("parla-flac")
        self.buffer = ctypes.create_string_buffer(_STREAM_BUFFER_BYTES)
        weakref.finalize(self, os.close, self.fd)


_files = threading.local()


def _scratch_file() -> tuple[int, ctypes.Array]:
    """This thread's in-memory file, emptied, and its FILE buffer (one per process and thread)."""
    scratch = getattr(_files, "scratch", None)
    if scratch is None or scratch.pid != os.getpid():  # a forked child makes its own
        scratch = _files.scratch = _Scratch()
    os.ftruncate(scratch.fd, 0)
    os.lseek(scratch.fd, 0, os.SEEK_SET)  # the FILE's descriptor is a dup: it shares the offset
    return scratch.fd, scratch.buffer


def encode_pcm16(samples: np.ndarray, sample_rate: int, compression_level: int = 0) -> bytes:
    """FLAC bytes of mono int16 ``samples`` (no MD5 signature). Check `available()` first."""
    libraries = _libraries()
    if libraries is None:
        raise RuntimeError("libFLAC is not installed")
    lib, libc = libraries
    if np.ndim(samples) != 1:
        raise ValueError(f"expected mono samples, got shape {np.shape(samples)}")
    pcm = np.ascontiguousarray(samples, dtype=np.int32)  # libFLAC takes 32-bit words
    scratch, buffer = _scratch_file()
    encoder = lib.FLAC__stream_encoder_new()
    if not encoder:
        raise MemoryError("libFLAC could not allocate an encoder")
    try:
        for setting, value in (("channels", 1), ("bits_per_sample", 16),
                               ("sample_rate", sample_rate),
                               ("compression_level", compression_level), ("do_md5", 0),
                               ("total_samples_estimate", len(pcm))):
            getattr(lib, f"FLAC__stream_encoder_set_{setting}")(encoder, value)
        descriptor = os.dup(scratch)
        stream = libc.fdopen(descriptor, b"w+b")  # closed by libFLAC when it finishes
        if not stream:
            error = ctypes.get_errno()
            os.close(descriptor)
            raise OSError(error, f"fdopen failed: {os.strerror(error)}")
        # before any output, as it must be; glibc ignores the size unless given the buffer
        libc.setvbuf(stream, buffer, _IOFBF, _STREAM_BUFFER_BYTES)
        # a seek makes the FILE know its offset: libFLAC's ftell after every frame is then
        # answered without an lseek each
        libc.fseeko(stream, 0, os.SEEK_SET)
        status = lib.FLAC__stream_encoder_init_FILE(encoder, stream, None, None)
        if status != _INIT_OK:
            raise FlacError(f"libFLAC could not start a stream (status {status})")
        written = lib.FLAC__stream_encoder_process_interleaved(encoder, pcm.ctypes.data, len(pcm))
        if not lib.FLAC__stream_encoder_finish(encoder) or not written:
            raise FlacError("libFLAC could not encode the samples")
    finally:
        lib.FLAC__stream_encoder_delete(encoder)
    return os.pread(scratch, os.fstat(scratch).st_size, 0)

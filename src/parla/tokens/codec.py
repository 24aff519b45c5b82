"""SNAC audio codec and the Orpheus text tokenizer: finding, loading and running them.

The only parla module that imports torch and snac, and only inside functions and classes, so
that importing it (and planning a run) costs nothing. File lookup (`resolve_snac`,
`resolve_text_tokenizer`) needs neither, which lets the stage fail on a missing model before it
reads any data or starts a worker.

Batching never changes a clip's codes: SNAC right-pads every clip with zeros to a multiple of
`pad_multiple` samples, so clips padded to the same length are batched as they are (no extra
padding), and each clip's codes equal those of encoding it alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parla.errors import RowRejected, UsageError
from parla.progress import get_logger
from parla.tokens.hub_files import hub_file, is_hub_id
from parla.tokens.orpheus import with_bos
from parla.tokens.precision import autocast, keep_freed_memory, set_precision
from parla.tokens.profile import PhaseStats

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = get_logger("codec")

SNAC_CONFIG = "config.json"
SNAC_WEIGHTS = "pytorch_model.bin"  # the name snac.SNAC.from_pretrained loads
TOKENIZER_FILE = "tokenizer.json"
Codes = tuple[np.ndarray, np.ndarray, np.ndarray]

# Peak memory per padded second of 24 kHz audio in one SNAC encoder batch. On a CPU, with glibc
# keeping freed memory (`keep_freed_memory`: 2-3x faster than its default there), measured at
# 95-112 MiB/s for 32-128 s batches: freed activations are not reused as they come, so the heap
# holds several times the ~20 MiB/s of float32 activations alive at once. On a GPU, 40 MiB/s:
# those activations doubled for the CUDA caching allocator and cuDNN workspaces. Only sizes the
# automatic batch; an out-of-memory batch is split.
DEVICE_BYTES_PER_AUDIO_SECOND = 40 * 2**20
CPU_BYTES_PER_AUDIO_SECOND = 112 * 2**20
# a CPU batch is capped at a quarter of the machine's memory, split between the workers
CPU_MEMORY_SHARE = 0.25
MAX_BATCH_SECONDS = 600.0  # beyond this a bigger batch no longer speeds up a GPU
MIN_BATCH_SECONDS = 8.0


# --- SNAC ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SnacFiles:
    """Where a SNAC model's files are on disk."""

    config: Path
    weights: Path

    def read_config(self) -> dict[str, Any]:
        try:
            config = json.loads(self.config.read_text())
        except (OSError, ValueError) as error:
            raise UsageError(f"SNAC config {self.config} is not readable JSON ({error}). "
                             f"{_SNAC_HINT}") from None
        if not isinstance(config, dict):
            raise UsageError(f"SNAC config {self.config} is not a JSON object. {_SNAC_HINT}")
        return config


_SNAC_HINT = ("Pass --snac_model a local folder holding config.json and pytorch_model.bin "
              "(e.g. made with `hf download hubertsiuzdak/snac_24khz --local-dir "
              "snac_24khz` on a machine with internet).")


def resolve_snac(model: str | os.PathLike) -> SnacFiles:
    """The config and weights of a SNAC model given as a local folder or a Hub id (no torch)."""
    name = str(model)
    folder = Path(name).expanduser()
    if folder.is_dir():
        files = SnacFiles(folder / SNAC_CONFIG, folder / SNAC_WEIGHTS)
        missing = [p.name for p in (files.config, files.weights) if not p.is_file()]
        if missing:
            raise UsageError(f"SNAC model folder {folder} lacks {', '.join(missing)}. {_SNAC_HINT}")
    elif folder.exists() or not is_hub_id(name):
        raise UsageError(f"SNAC model folder {name!r} does not exist. {_SNAC_HINT}")
    else:
        files = SnacFiles(hub_file(name, SNAC_CONFIG, "SNAC model", _SNAC_HINT),
                          hub_file(name, SNAC_WEIGHTS, "SNAC model", _SNAC_HINT))
    files.read_config()
    return files


def pad_multiple(model: Any) -> int:
    """Samples a clip is right-padded to a multiple of, exactly as ``snac.SNAC.preprocess``."""
    lcm = math.lcm(int(model.vq_strides[0]), int(model.attn_window_size or 1))
    return int(model.hop_length) * lcm


def padded_length(num_samples: int, model: Any) -> int:
    """Length SNAC pads a clip of ``num_samples`` to (a multiple of `pad_multiple`)."""
    multiple = pad_multiple(model)
    return math.ceil(num_samples / multiple) * multiple


def code_lengths(padded: int, model: Any) -> tuple[int, ...]:
    """Codes per level of a clip padded to ``padded`` samples (n, 2n, 4n for the 24 kHz model)."""
    frames = padded // int(model.hop_length)
    return tuple(frames // int(stride) for stride in model.vq_strides)


def fold_weight_norm(model: torch.nn.Module) -> int:
    """Bake weight norm into plain weights (inference only: saves the norm on every call).

    snac builds its convolutions with ``torch.nn.utils.parametrizations.weight_norm``; older
    snac versions used the hook-based ``torch.nn.utils.weight_norm``. Both are handled.
    Returns how many layers were folded.
    """
    import torch
    from torch.nn.utils import parametrize

    folded = 0
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            folded += 1
        elif any(type(hook).__name__ == "WeightNorm"
                 for hook in module._forward_pre_hooks.values()):
            torch.nn.utils.remove_weight_norm(module)
            folded += 1
    return folded


def load_snac(model: str | os.PathLike | SnacFiles, device: str | torch.device = "cpu",
              encoder_only: bool = True) -> torch.nn.Module:
    """A SNAC model ready for inference: weights loaded, weight norm folded, eval mode, on device.

    ``model`` is a Hub id, a local folder (config.json + pytorch_model.bin) or resolved files.
    ``encoder_only`` drops the decoder, which encoding never uses (less memory and copying).
    """
    import torch
    from snac import SNAC

    files = model if isinstance(model, SnacFiles) else resolve_snac(model)
    config = files.read_config()
    try:
        snac_model = SNAC(**config)
    except TypeError as error:
        raise UsageError(f"SNAC config {files.config} does not fit snac.SNAC: {error}") from None
    state = torch.load(files.weights, map_location="cpu", weights_only=True)
    try:
        snac_model.load_state_dict(state)
    except RuntimeError as error:
        raise UsageError(f"SNAC weights {files.weights} do not fit {files.config}: "
                         f"{str(error).splitlines()[0]}") from None
    if encoder_only:
        snac_model.decoder = None
    fold_weight_norm(snac_model)
    return snac_model.eval().requires_grad_(False).to(device)


def auto_batch_seconds(device: torch.device, share: int = 1) -> float:
    """Audio seconds per batch that fit the device's memory, split ``share`` ways: half the free
    GPU memory, or `CPU_MEMORY_SHARE` of the machine's memory on a CPU."""
    import torch

    if device.type != "cuda":
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        seconds = memory * CPU_MEMORY_SHARE / max(1, share) / CPU_BYTES_PER_AUDIO_SECOND
    else:
        free, _total = torch.cuda.mem_get_info(device)
        seconds = free * 0.5 / max(1, share) / DEVICE_BYTES_PER_AUDIO_SECOND
    return float(min(MAX_BATCH_SECONDS, max(MIN_BATCH_SECONDS, seconds)))


def plan_batches(padded_lengths: Sequence[int], max_batch_samples: int,
                 mixed_lengths: bool = True) -> list[list[int]]:
    """Indexes grouped into batches of at most ``max_batch_samples`` padded samples each.

    Longest clips first, so a batch is as wide as its first clip and the clips after it are
    padded to that (``mixed_lengths``; `LengthMask` keeps their codes those of each clip
    alone), or only clips of one padded length together. A clip longer than the budget gets a
    batch of its own (an out-of-memory batch shows up at once). Deterministic: ties keep input
    order.
    """
    order = sorted(range(len(padded_lengths)), key=lambda i: (-padded_lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current:
            width = padded_lengths[current[0]]
            if ((not mixed_lengths and padded_lengths[index] != width)
                    or (len(current) + 1) * width > max_batch_samples):
                batches.append(current)
                current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class LengthMask:
    """Zeroes each clip's padding before every convolution that looks across time.

    A clip padded to a longer batch-mate's length must see what it sees alone, zeros past its
    own padded end; SNAC's convolution biases make that padding non-zero from the first layer
    on. Every other encoder layer works sample by sample (Snake, 1x1 convolutions, the
    residual adds), and the quantizer pools whole frames, so masking these inputs leaves each
    clip's codes those of the clip alone. Registered once per model, as forward pre-hooks.
    """

    def __init__(self, encoder: torch.nn.Module) -> None:
        import torch

        self._padded: list[int] | None = None
        self._width = 0
        self._masks: dict[int, torch.Tensor] = {}
        for module in encoder.modules():
            if isinstance(module, torch.nn.Conv1d) and module.kernel_size[0] > 1:
                module.register_forward_pre_hook(self._before_conv)

    @classmethod
    def of(cls, model: torch.nn.Module) -> LengthMask:
        mask = getattr(model, "_parla_length_mask", None)
        if mask is None:
            mask = cls(model.encoder)
            model._parla_length_mask = mask
        return mask

    @contextlib.contextmanager
    def padded_to(self, padded: Sequence[int], width: int) -> Iterator[None]:
        """Mask a batch ``width`` samples wide whose clips are ``padded`` samples long."""
        if all(length == width for length in padded):  # one length: nothing to mask
            yield
            return
        self._padded, self._width, self._masks = list(padded), width, {}
        try:
            yield
        finally:
            self._padded, self._masks = None, {}

    def _before_conv(self, _module: Any, inputs: tuple) -> tuple | None:
        import torch

        if self._padded is None:
            return None
        x = inputs[0]
        width = x.shape[-1]  # every layer's width is the batch's divided by its stride so far
        mask = self._masks.get(width)
        if mask is None:
            keep = torch.tensor([n * width // self._width for n in self._padded],
                                device=x.device)
            mask = (torch.arange(width, device=x.device) >= keep[:, None])[:, None, :]
            self._masks[width] = mask
        return (x.masked_fill(mask, 0), *inputs[1:])


@dataclass
class _Prepared:
    """One batch ready for the device: padded audio plus clips that did not fit the plan."""

    indexes: list[int]
    lengths: list[int]
    audio: Any  # torch tensor (batch, 1, padded samples), pinned when the device is CUDA
    failed: list[tuple[int, RowRejected]]
    off_plan: list[tuple[int, np.ndarray]]  # decoded length differs from the planned one


class SnacEncoder:
    """Loads SNAC once; encodes many clips in length-sorted batches.

    ``encode_batch`` takes decoded arrays. ``encode_lazy`` takes clip lengths and a loader, and
    decodes the next batches on background threads (into pinned memory, copied without blocking)
    while the device encodes the current one, so the device does not wait on decoding. On CUDA
    one batch stays in flight: its codes come back to pinned memory while the next is launched.
    ``precision`` is `precision.set_precision`'s (exact: float32, TF32 off). With
    ``torch_compile`` the encoder goes through torch.compile once its codes for the first batch
    equal eager's, every one (`compiled` says how that went).
    """

    def __init__(self, model: str | os.PathLike | SnacFiles | torch.nn.Module, device: str = "cpu",
                 batch_seconds: float | None = None, decode_threads: int = 2,
                 prefetch_batches: int = 2, share: int = 1, precision: str = "exact",
                 torch_compile: bool = False, mixed_lengths: bool | None = None) -> None:
        import torch

        self.precision_state = set_precision(precision)
        self.precision = precision
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.model = (model.to(self.device).eval() if isinstance(model, torch.nn.Module)
                      else load_snac(model, self.device))
        self.sample_rate = int(self.model.sampling_rate)
        self.pad_multiple = pad_multiple(self.model)
        if batch_seconds is None:
            batch_seconds = auto_batch_seconds(self.device, share)
        self.batch_seconds = float(batch_seconds)
        self.decode_threads = max(1, decode_threads)
        self.prefetch_batches = max(1, prefetch_batches)
        self._pin = self.device.type == "cuda"
        self.phases = PhaseStats()
        # off | unchecked | trusted (it gave eager's codes) | differs | failed
        self.compiled = "unchecked" if torch_compile else "off"
        self._eager_encoder = self.model.encoder
        self._compiled_encoder = (torch.compile(self.model.encoder, dynamic=True)
                                  if torch_compile else None)
        # Clips of different lengths share a batch (masked) on a GPU, whose batches then fill
        # up whatever the lengths. On a CPU one length a batch is faster (smaller batches stay
        # in cache: PERFORMANCE.md). Compiled code (whose guards the masks' Python state would
        # multiply) and attention windows (which would see across clips) keep one length.
        if mixed_lengths is None:
            mixed_lengths = self.device.type == "cuda"
        self.mixed_lengths = (mixed_lengths and not torch_compile
                              and not self.model.attn_window_size)
        # hooks only where batches mix lengths: elsewhere they would be a Python call per
        # convolution for nothing, and traced into the compiled graph
        self._mask = LengthMask.of(self.model) if self.mixed_lengths else None

    @property
    def max_batch_samples(self) -> int:
        return max(self.pad_multiple, int(self.batch_seconds * self.sample_rate))

    def padded_length(self, num_samples: int) -> int:
        return padded_length(num_samples, self.model)

    # --- encoding ----------------------------------------------------------------------------

    def encode_batch(self, audios: Sequence[np.ndarray]) -> list[Codes]:
        """Codes of each clip (mono float32 at `sample_rate`), in input order."""
        arrays = [np.asarray(a, dtype=np.float32).reshape(-1) for a in audios]
        results = self.encode_lazy([len(a) for a in arrays], lambda i: arrays[i], threads=0)
        for index, result in enumerate(results):
            if isinstance(result, RowRejected):
                raise ValueError(f"clip {index}: {result}")
        return results  # type: ignore[return-value]

    def encode_lazy(self, num_samples: Sequence[int], load: Callable[[int], np.ndarray],
                    threads: int | None = None) -> list[Codes | RowRejected]:
        """Encode clips ``load(0) .. load(n-1)`` whose lengths are expected to be ``num_samples``.

        ``load`` returns mono float32 audio at `sample_rate` or raises RowRejected; that
        clip's result is the error. ``threads=0`` decodes in this thread (no overlap).
        """
        results: list[Codes | RowRejected | None] = [None] * len(num_samples)
        planned = [self.padded_length(max(1, n)) for n in num_samples]
        batches = plan_batches(planned, self.max_batch_samples, self.mixed_lengths)
        in_flight: _InFlight | None = None
        for prepared in self._prepared(batches, planned, load, threads):
            for index, error in prepared.failed:
                results[index] = error
            launched = self._launch(prepared.audio, prepared.lengths, prepared.indexes)
            if in_flight is not None:
                in_flight.collect(self, results)
            in_flight = launched
            for index, audio in prepared.off_plan:  # rare: header length was wrong
                padded = self.padded_length(len(audio))
                tensor = self._padded_tensor([audio], padded)
                results[index] = self._encode_padded(tensor, [len(audio)])[0]
        if in_flight is not None:
            in_flight.collect(self, results)
        return results  # type: ignore[return-value]

    def float32_codes(self, audios: Sequence[np.ndarray]) -> list[Codes]:
        """Each clip encoded alone in float32, autocast off: exact mode's codes, which a bf16
        run measures its own against."""
        import torch

        codes = []
        with self.phases.timed("agreement"):
            for audio in audios:
                audio = np.asarray(audio, dtype=np.float32).reshape(-1)
                tensor = self._padded_tensor([audio], self.padded_length(len(audio)))
                with torch.inference_mode(), self._eager():
                    levels = self.model.encode(tensor.to(self.device))
                codes += self._per_clip([level.to(torch.int16).cpu().numpy()
                                         for level in levels], [len(audio)])
        return codes

    def _prepared(self, batches: list[list[int]], planned: list[int],
                  load: Callable[[int], np.ndarray], threads: int | None) -> Iterator[_Prepared]:
        """Batches decoded ahead on a thread pool, yielded in plan order."""
        threads = self.decode_threads if threads is None else threads
        if threads == 0:
            for batch in batches:
                yield self._prepare(batch, planned, load)
            return
        with ThreadPoolExecutor(threads, thread_name_prefix="parla-decode") as pool:
            upcoming = iter(batches)
            ahead: deque = deque()

            def submit_next() -> None:
                batch = next(upcoming, None)
                if batch is not None:
                    ahead.append(pool.submit(self._prepare, batch, planned, load))

            for _ in range(self.prefetch_batches + threads):  # bounded: memory stays flat
                submit_next()
            while ahead:
                future = ahead.popleft()
                submit_next()
                with self.phases.timed("decode_wait"):
                    prepared = future.result()
                yield prepared

    def _prepare(self, batch: list[int], planned: list[int], load: Callable[[int], np.ndarray]
                 ) -> _Prepared:
        started = time.perf_counter()
        failed: list[tuple[int, RowRejected]] = []
        off_plan: list[tuple[int, np.ndarray]] = []
        kept: list[tuple[int, np.ndarray]] = []
        for index in batch:
            try:
                audio = np.asarray(load(index), dtype=np.float32).reshape(-1)
            except RowRejected as error:
                failed.append((index, error))
                continue
            if len(audio) == 0:
                failed.append((index, RowRejected("empty_audio", "no samples")))
            elif self.padded_length(len(audio)) != planned[index]:
                off_plan.append((index, audio))
            else:
                kept.append((index, audio))
        width = max((planned[index] for index, _ in kept), default=0)
        tensor = self._padded_tensor([a for _, a in kept], width) if kept else None
        self.phases.add("decode", time.perf_counter() - started)
        return _Prepared([i for i, _ in kept], [len(a) for _, a in kept], tensor, failed, off_plan)

    def _padded_tensor(self, audios: list[np.ndarray], padded: int) -> torch.Tensor:
        import torch

        tensor = torch.zeros((len(audios), 1, padded), dtype=torch.float32, pin_memory=self._pin)
        for row, audio in enumerate(audios):
            tensor[row, 0, :len(audio)] = torch.from_numpy(audio)
        return tensor

    def _launch(self, audio: torch.Tensor | None, lengths: list[int], indexes: list[int]
                ) -> _InFlight | None:
        """Start encoding one batch; on CUDA its codes are still on their way back."""
        import torch

        if not indexes:
            return None
        self.phases.batches.append((len(lengths), sum(lengths), len(lengths) * audio.shape[-1]))
        if not self._pin:
            return _InFlight(indexes, lengths, None, self._encode_padded(audio, lengths))
        try:
            with torch.inference_mode():
                with self.phases.timed("h2d"):
                    on_device = audio.to(self.device, non_blocking=True)
                with self.phases.timed("encode"), autocast(self.precision, "cuda"):
                    codes = self._encode(on_device, lengths)
                with self.phases.timed("d2h"):
                    host = [torch.empty(level.shape, dtype=torch.int16, pin_memory=True)
                            for level in codes]
                    for target, level in zip(host, codes, strict=True):
                        target.copy_(level.to(torch.int16), non_blocking=True)
                    done = torch.cuda.Event()
                    done.record()
        except torch.cuda.OutOfMemoryError:
            return _InFlight(indexes, lengths, None, self._encode_padded(audio, lengths))
        return _InFlight(indexes, lengths, (done, host), None)

    def _encode_padded(self, audio: torch.Tensor, lengths: list[int]) -> list[Codes]:
        """Encode one batch of equally padded clips; split in two when the device runs out."""
        import torch

        try:
            with torch.inference_mode():
                with self.phases.timed("h2d"):
                    on_device = audio.to(self.device, non_blocking=True)
                with self.phases.timed("encode"), autocast(self.precision, self.device.type):
                    codes = self._encode(on_device, lengths)
                with self.phases.timed("d2h"):
                    codes = [level.to(torch.int16).cpu().numpy() for level in codes]
        except torch.cuda.OutOfMemoryError:
            if len(lengths) == 1:
                raise
            torch.cuda.empty_cache()
            self.batch_seconds = max(self.pad_multiple / self.sample_rate, self.batch_seconds / 2)
            log.warning("out of device memory: batch of %d clips split, --batch_seconds now %.0f",
                        len(lengths), self.batch_seconds)
            half = len(lengths) // 2
            return (self._encode_padded(audio[:half], lengths[:half])
                    + self._encode_padded(audio[half:], lengths[half:]))
        return self._per_clip(codes, lengths)

    def _encode(self, audio: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
        """SNAC's codes of a batch already on the device (under the caller's autocast), each
        clip's padding masked where the batch is wider than the clip."""
        if self._mask is None:
            return self._run_encoder(audio)
        with self._mask.padded_to([self.padded_length(n) for n in lengths], audio.shape[-1]):
            return self._run_encoder(audio)

    def _run_encoder(self, audio: torch.Tensor) -> list[torch.Tensor]:
        import torch

        if self.compiled == "unchecked":
            return self._check_compiled(audio)
        if self.compiled == "trusted":
            try:
                return self.model.encode(audio)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as error:  # a later shape that inductor fails to compile
                self._give_up_compiling("failed", f"torch.compile failed on a later batch "
                                        f"({type(error).__name__})")
        return self.model.encode(audio)

    def _check_compiled(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """Encode the first batch eagerly and compiled; keep the compiled encoder only if every
        code is the same (torch.compile fuses and reorders arithmetic). Returns eager's codes."""
        import torch

        eager = self.model.encode(audio)
        self.model.encoder = self._compiled_encoder
        try:
            with self.phases.timed("compile"):
                compiled = self.model.encode(audio)
        except torch.cuda.OutOfMemoryError:  # the batch is split, not the compiler dropped
            self.model.encoder = self._eager_encoder
            raise
        except Exception as error:  # no C compiler, an operation inductor cannot take
            first = (str(error).strip().splitlines() or [""])[0][:160]
            self._give_up_compiling("failed", f"torch.compile failed ({type(error).__name__}: "
                                    f"{first})")
            return eager
        differ = sum(int((a != b).sum()) for a, b in zip(eager, compiled, strict=True))
        if differ:
            total = sum(level.numel() for level in eager)
            self._give_up_compiling("differs", f"torch.compile changed {differ} of {total} "
                                    "codes of the first batch")
            return eager
        self.compiled = "trusted"
        log.info("torch.compile gave eager's codes for the first batch (%d clips): using it",
                 audio.shape[0])
        return eager

    def _give_up_compiling(self, state: str, why: str) -> None:
        self.model.encoder = self._eager_encoder
        self.compiled = state
        log.warning("%s; encoding eagerly (codes stay exact)", why)

    @contextlib.contextmanager
    def _eager(self) -> Iterator[None]:
        """The eager encoder for a while (float32 reference codes are eager's)."""
        current, self.model.encoder = self.model.encoder, self._eager_encoder
        try:
            yield
        finally:
            self.model.encoder = current

    def _per_clip(self, codes: list[np.ndarray], lengths: list[int]) -> list[Codes]:
        """Each row's codes, cut to its own clip's padded length."""
        return [tuple(level[row, :n].copy()
                      for level, n in zip(codes, code_lengths(self.padded_length(length),
                                                              self.model), strict=True))
                for row, length in enumerate(lengths)]  # type: ignore[misc]


@dataclass
class _InFlight:
    """A launched batch: its codes, or (CUDA) the event after which its pinned codes are there."""

    indexes: list[int]
    lengths: list[int]
    pending: tuple[Any, list[Any]] | None
    codes: list[Codes] | None

    def collect(self, encoder: SnacEncoder, results: list) -> None:
        codes = self.codes
        if codes is None:
            assert self.pending is not None
            done, host = self.pending
            with encoder.phases.timed("d2h"):
                done.synchronize()
            codes = encoder._per_clip([level.numpy() for level in host], self.lengths)
        for index, clip_codes in zip(self.indexes, codes, strict=True):
            results[index] = clip_codes


# --- text tokenizer ----------------------------------------------------------------------------

_TOKENIZER_HINT = ("Pass --text_tokenizer a local tokenizer.json or a folder holding one (e.g. "
                   "`hf download canopylabs/orpheus-3b-0.1-pretrained tokenizer.json "
                   "--local-dir orpheus_tokenizer` on a machine with internet).")


def resolve_text_tokenizer(name: str | os.PathLike) -> Path:
    """The tokenizer.json of a local file, a local folder or a Hub id."""
    text = str(name)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / TOKENIZER_FILE).is_file():
            return path / TOKENIZER_FILE
        raise UsageError(f"text tokenizer folder {path} has no {TOKENIZER_FILE}. {_TOKENIZER_HINT}")
    if path.exists() or not is_hub_id(text):
        raise UsageError(f"text tokenizer {text!r} does not exist. {_TOKENIZER_HINT}")
    return hub_file(text, TOKENIZER_FILE, "text tokenizer", _TOKENIZER_HINT)


class TextTokenizer:
    """The Orpheus (Llama 3) text tokenizer from a tokenizer.json.

    Every encoding starts with exactly one START_OF_TEXT (128000), whether or not the tokenizer
    file's post-processor adds it, as Orpheus's ``tokenizer.encode(text)`` does.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from tokenizers import Tokenizer

        self.path = Path(path)
        try:
            self._tokenizer = Tokenizer.from_file(str(self.path))
        except Exception as error:  # tokenizers raises plain Exception on a bad file
            raise UsageError(f"text tokenizer {self.path} cannot be read: {error}") from None

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return [with_bos(encoding.ids) for encoding in encodings]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]


def load_text_tokenizer(name: str | os.PathLike) -> TextTokenizer:
    """`TextTokenizer` from a tokenizer.json path, a folder holding one, or a Hub id."""
    return TextTokenizer(resolve_text_tokenizer(name))

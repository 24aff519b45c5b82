"""How SNAC's arithmetic runs on the device: the precision policy, and the CPU allocator.

``exact`` (the default) is float32 with TF32 off for both matmul and cuDNN convolutions. On
Ampere and newer GPUs cuDNN runs float32 convolutions in TF32 unless told not to
(`torch.backends.cudnn.allow_tf32` defaults to True), which flips some codes against float32:
emulated TF32 flipped 0.15% of level-2 codes on CPU. ``bf16`` (opt-in) runs the encoder under
bfloat16 autocast, faster on a GPU and measurably different (9.2% of level-2 codes flipped in the
same emulation). A bf16 run also encodes the first `AGREEMENT_CLIPS` clips of each shard in
float32 and records how many codes agree (`code_agreement`), in the shard's footer, and summed
(`combined_agreement`) in tokenization_stats.json and the card.

Imports torch only inside functions, as `codec` does.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

PRECISIONS = ("exact", "bf16")
# clips of each shard a bf16 run also encodes in float32, to measure how far its codes agree
AGREEMENT_CLIPS = 4

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def set_precision(precision: str) -> dict[str, Any]:
    """Set torch's process-wide float32 flags for ``precision``; returns `precision_state`.

    Both modes turn TF32 off: bf16 autocast covers the layers it covers, and every other
    float32 operation stays float32.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return precision_state(precision)


def precision_state(precision: str | None = None) -> dict[str, Any]:
    """The flags that decide the arithmetic, as benchmarks and checks report them."""
    import torch

    return {"precision": precision,
            "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}


def code_agreement(codes: Sequence[Sequence[Any]], reference: Sequence[Sequence[Any]]
                   ) -> dict[str, Any]:
    """How many of ``codes`` equal ``reference`` (float32's), per SNAC level: clips, codes and
    equal codes, as counts that add up across shards. Both are lists of per-clip code levels."""
    levels = len(reference[0]) if reference else 0
    total, equal = [0] * levels, [0] * levels
    for clip, expected in zip(codes, reference, strict=True):
        for level, (got, want) in enumerate(zip(clip, expected, strict=True)):
            if len(got) != len(want):
                raise ValueError(f"level {level}: {len(got)} codes against {len(want)}")
            total[level] += len(want)
            equal[level] += int(sum(int(a) == int(b) for a, b in zip(got, want, strict=True)))
    return {"clips": len(reference), "codes": total, "equal": equal}


def combined_agreement(agreements: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The run's agreement from its shards' (None when none measured): the summed counts and,
    per level, the share of codes equal to float32's."""
    agreements = [a for a in agreements if a and a.get("clips")]
    if not agreements:
        return None
    levels = max(len(a["codes"]) for a in agreements)
    total, equal = [0] * levels, [0] * levels
    for agreement in agreements:
        for level, (count, same) in enumerate(zip(agreement["codes"], agreement["equal"],
                                                  strict=True)):
            total[level] += count
            equal[level] += same
    return {"clips": sum(a["clips"] for a in agreements), "codes": total, "equal": equal,
            "share_equal": {f"level_{level}": round(same / count, 6) if count else None
                            for level, (count, same) in enumerate(zip(total, equal,
                                                                      strict=True))}}


@contextlib.contextmanager
def autocast(precision: str, device_type: str) -> Iterator[None]:
    """bfloat16 autocast for ``bf16``; nothing for ``exact``."""
    if precision != "bf16":
        yield
        return
    import torch

    with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
        yield


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the heap instead of returning it to the kernel.

    glibc serves allocations over 32 MiB with mmap and unmaps them on free, so a CPU batch
    whose activations pass that size page-faults through every fresh buffer on every call:
    measured on 2 EPYC cores, a batch of 8 two-second clips encoded at 1.2 audio-s/s against
    3.6 for one clip, and at 3.4 with this set. Process-wide; True when it took effect (Linux
    with glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False

#!/usr/bin/env python
"""Codes on a device: batched against one clip at a time (exact mode), and bf16 against fp32.

Clips come in a few lengths, which share batches (each clip's padding masked). Prints how many
clips the batched exact path encodes identically to encoding each clip alone, and the share of
codes per level that bf16 autocast keeps. Not a test; `benchmarks/gpu_check.sh` runs it.

    python benchmarks/check_codes.py --device cuda --clips 256
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tokenize import make_clips  # noqa: E402


def decode(data: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(data), dtype="float32")[0]


def alone(model, audio: list[np.ndarray], device) -> list[list[np.ndarray]]:
    import torch

    out = []
    with torch.inference_mode():
        for clip in audio:
            codes = model.encode(torch.from_numpy(clip)[None, None].to(device))
            out.append([level[0].cpu().numpy() for level in codes])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snac_model", help="Hub id or folder (default: random 24 kHz SNAC)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--lengths", type=int, default=4, help="distinct clip lengths")
    args = parser.parse_args()

    from parla.testing import write_random_snac
    from parla.tokens.codec import SnacEncoder, load_snac
    from parla.tokens.precision import set_precision

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.snac_model or str(write_random_snac(Path(tmp) / "snac"))
        state = set_precision("exact")
        model = load_snac(model_dir, args.device)
    per_length = -(-args.clips // args.lengths)
    audio = [decode(data)[: 24000 * (2 + i // per_length)]
             for i, data in enumerate(make_clips(args.clips, 5.5, 6.0, 1))]
    reference = alone(model, audio, args.device)
    exact = SnacEncoder(model, args.device, precision="exact", mixed_lengths=True)
    batched = exact.encode_batch(audio)
    sizes = [b[0] for b in exact.phases.drain()["batches"]]
    same = sum(all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
               for want, got in zip(reference, batched, strict=True))
    print(f"device {args.device}; flags {state}")
    print(f"exact, batched (batches of {sizes} clips) vs one clip at a time: identical codes "
          f"for {same}/{len(audio)} clips")
    bf16 = SnacEncoder(model, args.device, precision="bf16").encode_batch(audio)
    set_precision("exact")
    for level in range(3):
        want = np.concatenate([codes[level] for codes in reference])
        got = np.concatenate([codes[level] for codes in bf16])
        print(f"bf16 vs fp32, level {level}: {100 * np.mean(want == got):.2f}% of "
              f"{len(want)} codes agree")
    if same != len(audio):
        sys.exit(1)


if __name__ == "__main__":
    main()

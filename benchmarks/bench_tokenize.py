#!/usr/bin/env python
"""SNAC encoding: the original scripts' way (one clip at a time) against parla's, side by side.

Both run in this process, on the same FLAC clips and the same weights, decoding included:

* original: decode one clip, ``model.encode`` it alone under ``torch.no_grad()`` with the model
  as ``SNAC.from_pretrained`` returns it (weight norm recomputed on every call);
* parla: ``SnacEncoder.encode_lazy``: weight norm folded, clips bucketed by padded length into
  batches, decoding on background threads ahead of the model, ``torch.inference_mode()``.

It also checks that both give the same codes for every clip. Without ``--snac_model`` the model is
a randomly initialised SNAC of the real 24 kHz config (same architecture and cost, no download).
Not a test: prints clips/s, audio seconds/s and the speed-up.

    python benchmarks/bench_tokenize.py                      # CPU, random weights
    python benchmarks/bench_tokenize.py --snac_model hubertsiuzdak/snac_24khz --clips 2000
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make_clips(count: int, min_seconds: float, max_seconds: float, seed: int) -> list[bytes]:
    """FLAC clips (24 kHz, 16-bit) of speech-like noise: tone bursts under a syllable envelope."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(count):
        n = int(rng.uniform(min_seconds, max_seconds) * 24000)
        t = np.arange(n) / 24000
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t), 0, None)
        voice = np.sin(2 * np.pi * rng.uniform(90, 250) * t * (1 + 0.05 * np.sin(3 * t)))
        audio = 0.3 * envelope * voice + rng.normal(0, 0.01, n)
        buffer = io.BytesIO()
        sf.write(buffer, audio.astype(np.float32), 24000, format="FLAC", subtype="PCM_16")
        clips.append(buffer.getvalue())
    return clips


def random_snac_folder(folder: Path) -> Path:
    from parla.testing import write_random_snac

    return write_random_snac(folder)


def decode(data: bytes) -> np.ndarray:
    samples, _ = sf.read(io.BytesIO(data), dtype="float32")
    return samples


def run_original(model, clips: list[bytes], device) -> list[list[np.ndarray]]:
    import torch

    out = []
    with torch.no_grad():
        for data in clips:
            audio = torch.from_numpy(decode(data)).float()[None, None].to(device)
            codes = model.encode(audio)
            out.append([level[0].cpu().numpy() for level in codes])
    return out


def run_parla(encoder, clips: list[bytes]) -> list:
    lengths = [sf.info(io.BytesIO(data)).frames for data in clips]
    return encoder.encode_lazy(lengths, lambda i: decode(clips[i]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snac_model", help="Hub id or folder (default: random 24 kHz SNAC)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--min_seconds", type=float, default=1.5)
    parser.add_argument("--max_seconds", type=float, default=6.0)
    parser.add_argument("--batch_seconds", type=float, help="parla batch size (default: auto)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--decode_threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from snac import SNAC

    from parla.tokens.codec import SnacEncoder, load_snac, resolve_snac

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.snac_model or str(random_snac_folder(Path(tmp)))
        files = resolve_snac(model_dir)
        original = SNAC.from_pretrained(str(files.config.parent)).eval().to(device)
        encoder = SnacEncoder(load_snac(files, device), str(device), args.batch_seconds,
                              decode_threads=args.decode_threads)
    clips = make_clips(args.clips, args.min_seconds, args.max_seconds, args.seed)
    seconds = sum(sf.info(io.BytesIO(c)).frames for c in clips) / 24000
    warm = make_clips(2, 1.0, 2.0, args.seed + 1)
    run_original(original, warm, device)
    run_parla(encoder, warm)

    def timed(function, *a):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = function(*a)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result, time.perf_counter() - start, time.process_time() - cpu_start

    old_codes, old_time, old_cpu = timed(run_original, original, clips, device)
    new_codes, new_time, new_cpu = timed(run_parla, encoder, clips)
    same = sum(all(np.array_equal(a, b) for a, b in zip(old, new, strict=True))
               for old, new in zip(old_codes, new_codes, strict=True))

    print(f"device {device}, torch threads {torch.get_num_threads()}, model "
          f"{args.snac_model or 'random SNAC (24 kHz config)'}")
    print(f"{len(clips)} clips, {seconds:.1f} s of audio ({args.min_seconds}-{args.max_seconds} s "
          f"each); parla batch_seconds {encoder.batch_seconds:g}")
    print(f"{'path':<30}{'wall s':>8}{'clips/s':>9}{'audio s/s':>11}{'CPU s':>8}")
    for name, elapsed, cpu in (("original (one clip at a time)", old_time, old_cpu),
                               ("parla", new_time, new_cpu)):
        print(f"{name:<30}{elapsed:>8.2f}{len(clips) / elapsed:>9.2f}{seconds / elapsed:>11.1f}"
              f"{cpu:>8.2f}")
    print(f"speed-up (wall): {old_time / new_time:.2f}x; identical codes for {same}/{len(clips)} "
          "clips")


if __name__ == "__main__":
    main()

"""Draw one demo clip before and after conditioning (docs/images/conditioning.png).

Usage: python scripts/plot_conditioning.py [--clip common_voice_ca_XXXX.mp3] [--out PATH]
Needs matplotlib (not a parla dependency).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from parla.audio import decode as audio
from parla.conditioning.policy import Conditioner
from parla.demo import demo_corpus_path
from parla.options import ConditioningOptions
from parla.store.sources import read_cv_tsv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clip", help="a clip of the demo corpus (default: the first valid one)")
    parser.add_argument("--out", default="docs/images/conditioning.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpus = demo_corpus_path()
    table = read_cv_tsv(corpus / "validated.tsv")
    rows = table[table["path"] == args.clip] if args.clip else table[table["sentence"] != ""]
    row = rows.iloc[0]
    samples, rate = audio.decode_audio((corpus / "clips" / row["path"]).read_bytes(), "mp3")
    samples = audio.resample(samples, rate, 24000)
    clip = Conditioner(ConditioningOptions())(samples, 24000, row["sentence"])
    m = clip.measurements

    fig, axes = plt.subplots(2, 1, figsize=(10, 4.8), sharex=True, sharey=True)
    for axis, data, title in (
        (axes[0], samples, f"before: {m['lufs_before']:.1f} LUFS, leading "
                           f"{m['leading_silence_s_before']:.2f} s, trailing "
                           f"{m['trailing_silence_s_before']:.2f} s"),
        (axes[1], clip.samples, f"after: {m['lufs_after']:.1f} LUFS, leading "
                                f"{m['leading_silence_s_after']:.2f} s, trailing "
                                f"{m['trailing_silence_s_after']:.2f} s"),
    ):
        axis.plot(np.arange(data.size) / 24000, data, linewidth=0.4, color="#1f4e79")
        axis.set_title(title, fontsize=10)
        axis.set_ylim(-1, 1)
        axis.set_ylabel("amplitude")
    axes[1].set_xlabel("seconds")
    fig.suptitle(f"{row['path']}: \u201c{clip.text}\u201d", fontsize=10)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Stand-in models for offline use: a randomly initialised SNAC of the real 24 kHz config and a
small word-level text tokenizer.

They exercise the tokenize stage exactly as real weights do (same architecture, same cost, same
loading code) where the Hub cannot be reached: tests, benchmarks, and the README's offline demo.
Codes from random weights mean nothing; never train on them.

    python -m parla.testing OUT_DIR   # writes OUT_DIR/snac_24khz_random/ and OUT_DIR/tokenizer.json
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

# hubertsiuzdak/snac_24khz's config.json
SNAC_24KHZ_CONFIG = {"sampling_rate": 24000, "encoder_dim": 48, "encoder_rates": [2, 4, 8, 8],
                     "decoder_dim": 1024, "decoder_rates": [8, 8, 4, 2], "attn_window_size": None,
                     "codebook_size": 4096, "codebook_dim": 8, "vq_strides": [4, 2, 1],
                     "noise": True, "depthwise": True}
BOS_TOKEN, BOS_ID = "<|begin_of_text|>", 128000


def write_random_snac(folder: str | Path, seed: int = 0) -> Path:
    """A folder with config.json + pytorch_model.bin, as `SNAC.from_pretrained` reads them."""
    import snac
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = snac.SNAC(**SNAC_24KHZ_CONFIG)
    (folder / "config.json").write_text(json.dumps(SNAC_24KHZ_CONFIG))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def write_word_tokenizer(path: str | Path, sentences: Iterable[str], add_bos: bool = True) -> Path:
    """A word-level tokenizer.json over the words of ``sentences`` and the voice names.

    ``add_bos`` prepends <|begin_of_text|> (128000) as Llama 3's tokenizer does; ids of words
    start at 1000, well away from Orpheus's special tokens.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from .dialects import DIALECTS

    words = {"[UNK]"} | {d.voice_name for d in DIALECTS.values()}
    for sentence in sentences:
        words.update(re.findall(r"\w+|[^\w\s]", sentence))
    vocab = {word: 1000 + i for i, word in enumerate(sorted(words))}
    vocab[BOS_TOKEN] = BOS_ID
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                       pre_tokenizers.Punctuation()])
    if add_bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS_TOKEN} $A", special_tokens=[(BOS_TOKEN, BOS_ID)])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def write_offline_models(out_dir: str | Path) -> tuple[Path, Path]:
    """Random SNAC and a tokenizer over the demo corpus's sentences, under ``out_dir``."""
    from .demo import demo_corpus_path
    from .sources import read_cv_tsv

    out_dir = Path(out_dir)
    sentences = read_cv_tsv(demo_corpus_path() / "validated.tsv")["sentence"]
    return (write_random_snac(out_dir / "snac_24khz_random"),
            write_word_tokenizer(out_dir / "tokenizer.json", sentences))


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print("usage: python -m parla.testing OUT_DIR", file=sys.stderr)
        sys.exit(2)
    snac_dir, tokenizer = write_offline_models(sys.argv[1])
    print(f"random SNAC (real 24 kHz config): {snac_dir}\nword-level tokenizer: {tokenizer}")

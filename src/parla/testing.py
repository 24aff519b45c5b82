"""Stand-ins for offline use: a randomly initialised SNAC of the real 24 kHz config, a small
word-level text tokenizer, and Common Voice-format releases of any size made of the demo clips.

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

from parla.dialects import DIALECTS

# hubertsiuzdak/snac_24khz's config.json
SNAC_24KHZ_CONFIG = {"sampling_rate": 24000, "encoder_dim": 48, "encoder_rates": [2, 4, 8, 8],
                     "decoder_dim": 1024, "decoder_rates": [8, 8, 4, 2], "attn_window_size": None,
                     "codebook_size": 4096, "codebook_dim": 8, "vq_strides": [4, 2, 1],
                     "noise": True, "depthwise": True}
BOS_TOKEN, BOS_ID = "<|begin_of_text|>", 128000
# the accents column value of each dialect in a Common Voice release: its display name
DIALECT_ACCENTS = {dialect.id: dialect.display_name for dialect in DIALECTS.values()}
CLIPS_PER_SPEAKER = 10


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

    from parla.dialects import DIALECTS

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
    from parla.demo import demo_corpus_path
    from parla.store.sources import read_cv_tsv

    out_dir = Path(out_dir)
    sentences = read_cv_tsv(demo_corpus_path() / "validated.tsv")["sentence"]
    return (write_random_snac(out_dir / "snac_24khz_random"),
            write_word_tokenizer(out_dir / "tokenizer.json", sentences))


def write_demo_release(folder: str | Path, dialects: list[str], clips_per_dialect: int,
                       clips_per_speaker: int = CLIPS_PER_SPEAKER) -> Path:
    """A Common Voice-format release of any size: the demo's good clips (1.5 s and longer,
    with a sentence) copied under new names, ``clips_per_speaker`` to a speaker. Needs no
    espeak-ng and no network; benchmarks and tests use it."""
    import csv
    import hashlib
    import shutil

    from parla.demo import demo_corpus_path
    from parla.store.sources import read_cv_tsv

    folder = Path(folder)
    demo = demo_corpus_path()
    rows = read_cv_tsv(demo / "validated.tsv")
    lengths = dict(csv.reader((demo / "clip_durations.tsv").read_text(encoding="utf-8")
                              .splitlines(), delimiter="\t"))
    good = [r for r in rows.to_dict("records") if r["sentence"]
            and int(lengths.get(r["path"], "0")) >= 1500]
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "clips").mkdir(parents=True)
    header = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender",
              "accents"]
    out_rows, durations = [], []
    for dialect in dialects:
        for index in range(clips_per_dialect):
            source = good[(index * 7 + len(out_rows)) % len(good)]
            name = f"{dialect}_{index:06d}.mp3"
            # copies, not links: a test that spoils a clip must not spoil the demo corpus
            shutil.copyfile(demo / "clips" / source["path"], folder / "clips" / name)
            speaker = hashlib.sha256(f"{dialect}-{index // clips_per_speaker}".encode())
            out_rows.append([speaker.hexdigest(), name, source["sentence"], "2", "0",
                             "thirties", "", DIALECT_ACCENTS[dialect]])
            durations.append((name, lengths[source["path"]]))
    with open(folder / "validated.tsv", "w", encoding="utf-8") as handle:
        handle.write("\t".join(header) + "\n")
        handle.writelines("\t".join(row) + "\n" for row in out_rows)
    with open(folder / "clip_durations.tsv", "w", encoding="utf-8") as handle:
        handle.write("clip\tduration[ms]\n")
        handle.writelines(f"{name}\t{ms}\n" for name, ms in durations)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print("usage: python -m parla.testing OUT_DIR", file=sys.stderr)
        sys.exit(2)
    snac_dir, tokenizer = write_offline_models(sys.argv[1])
    print(f"random SNAC (real 24 kHz config): {snac_dir}\nword-level tokenizer: {tokenizer}")

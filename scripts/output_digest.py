"""Digest every output a run writes, to check that a change keeps the bytes.

Builds two corpora (the embedded demo corpus, and a copy of it with corrupt rows: stray tabs,
bytes that are not UTF-8, a truncated clip, WAV bytes named .mp3, a path leaving clips/), runs
prepare, tokenize (dedupe on and off, with --pack_length) through the CLI, and prints one
`sha256  path` line per file. Run it on two commits with the same WORK_DIR (a shard's footer
identifies its sources by their real path, so both runs must read them from the same place: the
demo corpus is copied there too) and diff the two outputs:

    python scripts/output_digest.py /tmp/parla-digest > before.txt   # on the first commit
    python scripts/output_digest.py /tmp/parla-digest > after.txt    # on the second
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

# files whose bytes a change must keep (report.html embeds figures and players whose exact SVG
# text is not part of the contract; everything the data path writes is)
CHECKED = ("*.parquet", "rejects.jsonl", "dialect_statistics.json", "tokenization_stats.json",
           "speaker_metadata.json", "README.md")


def parla(command: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "parla", command, "-q", *args], check=True,
                   stdout=subprocess.DEVNULL)


def corrupt_copy(demo: Path, folder: Path) -> Path:
    shutil.copytree(demo, folder)
    clips = sorted((folder / "clips").glob("*.mp3"))
    clips[0].write_bytes(clips[0].read_bytes()[:2000])  # truncated
    clips[1].write_bytes(b"RIFF" + clips[1].read_bytes()[4:])  # not an MP3
    with open(folder / "validated.tsv", "ab") as tsv:
        header = (folder / "validated.tsv").read_bytes().split(b"\n", 1)[0].split(b"\t")
        width = len(header)
        tsv.write(b"\t".join([b"x"] * (width + 2)) + b"\n")  # stray tabs
        tsv.write(b"\t".join([b"\xff\xfe"] * width) + b"\n")  # not UTF-8
        row = [b""] * width
        row[header.index(b"path")] = b"../../etc/passwd"
        tsv.write(b"\t".join(row) + b"\n")
    return folder


def main() -> None:
    work = Path(sys.argv[1])
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    from parla.demo import demo_corpus_path
    from parla.testing import write_offline_models

    snac, tokenizer = write_offline_models(work / "models")
    demo = shutil.copytree(demo_corpus_path(), work / "demo_release")
    corpora = {"demo": demo, "corrupt": corrupt_copy(demo, work / "corrupt_release")}
    for name, corpus in corpora.items():
        prepared = work / f"{name}-prepared"
        parla("prepare", "--datasets", str(corpus), "--output_dir", str(prepared),
              "--max_samples_per_speaker", "8", "--rows_per_shard", "16", "--num_workers", "2",
              "--save_speaker_metadata")
        for dedupe in ("--dedupe_frames", "--no_dedupe_frames"):
            parla("tokenize", "--input_dir", str(prepared), "--output_dir",
                  str(work / f"{name}-tokenized{dedupe}"), "--snac_model", str(snac),
                  "--text_tokenizer", str(tokenizer), "--device", "cpu", "--pack_length", "512",
                  dedupe)
    for folder in sorted(p for p in work.iterdir() if p.name.split("-")[-1] != "release"
                         and p.name != "models"):
        for pattern in CHECKED:
            for path in sorted(folder.rglob(pattern)):
                text = path.read_bytes().replace(str(work).encode(), b"WORK")
                print(hashlib.sha256(text).hexdigest(), path.relative_to(work))


if __name__ == "__main__":
    main()

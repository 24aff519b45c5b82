"""parla's embedded demo corpus: a tiny raw Common Voice 23 Catalan release (see README.md)."""

from __future__ import annotations

from pathlib import Path

_DEMO_FOLDER = "cv_ca_demo"


def demo_corpus_path() -> Path:
    """Folder of the shipped demo release (`validated.tsv`, `clip_durations.tsv`, `clips/`)."""
    # the corpus ships as package data next to this file (pyproject: package-data demo/**/*)
    return Path(__file__).resolve().parent / _DEMO_FOLDER


def load_hint(folder: str, resolved: Path) -> str:
    """What `parla demo` prints after the summary: where the corpus is and how to load it."""
    return (f"\nDemo corpus prepared in {resolved}\nLoad it with:\n"
            f"  import datasets\n"
            f"  train = datasets.load_dataset({folder!r}, split='train', "
            f"cache_dir='/tmp/parla-cache')  # every dialect\n"
            f"  central = datasets.load_dataset({folder!r}, 'central', split='train', "
            f"cache_dir='/tmp/parla-cache')  # one dialect\n"
            f"  central = central.cast_column('audio', datasets.Audio(decode=False))  "
            f"# FLAC bytes: read them with soundfile (decoding needs torchcodec)\n"
            f"(a fresh cache_dir: datasets caches a local folder by its name, so a regenerated "
            f"folder could read back stale rows)")

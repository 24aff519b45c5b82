"""parla's embedded demo corpus: a tiny raw Common Voice 23 Catalan release (see README.md)."""

from __future__ import annotations

from pathlib import Path

_DEMO_FOLDER = "cv_ca_demo"


def demo_corpus_path() -> Path:
    """Folder of the shipped demo release (`validated.tsv`, `clip_durations.tsv`, `clips/`)."""
    # the corpus ships as package data next to this file (pyproject: package-data demo/**/*)
    return Path(__file__).resolve().parent / _DEMO_FOLDER

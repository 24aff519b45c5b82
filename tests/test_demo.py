"""The shipped demo corpus: a raw Common Voice 23 Catalan release made by scripts/make_demo.py."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from parla.demo import demo_corpus_path
from parla.dialects import DIALECTS, dialect_from_accent

HEADER = [
    "client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
    "down_votes", "age", "gender", "accents", "variant", "locale", "segment",
]
# The deliberately bad rows documented in src/parla/demo/README.md.
TRUNCATED = "common_voice_ca_40474485.mp3"
ZERO_LENGTH = "common_voice_ca_41442110.mp3"
EMPTY_SENTENCE = "common_voice_ca_41319752.mp3"
TOO_SHORT = "common_voice_ca_40477196.mp3"
BAD_CLIPS = {TRUNCATED, ZERO_LENGTH, EMPTY_SENTENCE, TOO_SHORT}


def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of an unquoted Common Voice TSV."""
    with open(path, encoding="utf-8", newline="") as handle:
        lines = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return lines[0], lines[1:]


@pytest.fixture(scope="module")
def corpus() -> Path:
    return demo_corpus_path()


@pytest.fixture(scope="module")
def validated(corpus: Path) -> list[dict[str, str]]:
    header, rows = read_tsv(corpus / "validated.tsv")
    assert header == HEADER
    assert all(len(row) == len(HEADER) for row in rows)
    return [dict(zip(header, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def durations_ms(corpus: Path) -> dict[str, int]:
    header, rows = read_tsv(corpus / "clip_durations.tsv")
    assert header == ["clip", "duration[ms]"]
    return {clip: int(ms) for clip, ms in rows}


def test_layout_is_a_common_voice_release(corpus: Path) -> None:
    assert sorted(p.name for p in corpus.iterdir()) == [
        "clip_durations.tsv", "clips", "validated.tsv"]
    clips = list((corpus / "clips").iterdir())
    assert clips and all(re.fullmatch(r"common_voice_ca_\d+\.mp3", p.name) for p in clips)
    total_bytes = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())
    assert total_bytes < 5 * 1024 * 1024


def test_rows_look_like_common_voice(validated: list[dict[str, str]]) -> None:
    assert 90 <= len(validated) <= 110
    for row in validated:
        assert re.fullmatch(r"[0-9a-f]{64}", row["client_id"])
        assert row["locale"] == "ca"
        assert row["up_votes"].isdigit() and row["down_votes"].isdigit()
    # raw quote characters survive because the file is unquoted
    assert any('"' in row["sentence"] for row in validated)
    assert any("·" in row["sentence"] for row in validated)
    assert sum(int(r["down_votes"]) > int(r["up_votes"]) for r in validated) >= 2


def test_all_seven_dialects_and_uneven_speakers(validated: list[dict[str, str]]) -> None:
    dialects = [dialect_from_accent(row["accents"]) for row in validated]
    assert None not in dialects
    assert {d.id for d in dialects} == set(DIALECTS)
    per_speaker = Counter(row["client_id"] for row in validated)
    assert max(per_speaker.values()) >= 8  # balancing has something to cap
    assert sum(n < 3 for n in per_speaker.values()) >= 3  # min_samples_per_speaker drops some
    speakers = {(d.id, r["client_id"]) for r, d in zip(validated, dialects, strict=True)}
    speakers_per_dialect = Counter(dialect_id for dialect_id, _ in speakers)
    assert all(3 <= n <= 5 for n in speakers_per_dialect.values())


def test_every_listed_clip_exists_and_has_a_duration(
    corpus: Path, validated: list[dict[str, str]], durations_ms: dict[str, int]
) -> None:
    paths = [row["path"] for row in validated]
    assert len(set(paths)) == len(paths)
    assert set(durations_ms) == set(paths)
    for path in paths:
        assert (corpus / "clips" / path).is_file()
        assert ((corpus / "clips" / path).stat().st_size == 0) == (path == ZERO_LENGTH)


def test_documented_bad_rows(
    corpus: Path, validated: list[dict[str, str]], durations_ms: dict[str, int]
) -> None:
    by_path = {row["path"]: row for row in validated}
    assert BAD_CLIPS <= set(by_path)
    assert [r["path"] for r in validated if not r["sentence"]] == [EMPTY_SENTENCE]
    assert durations_ms[TOO_SHORT] < 1000
    assert [p for p, ms in durations_ms.items() if ms < 1000] == sorted([TOO_SHORT, ZERO_LENGTH])
    with pytest.raises(sf.LibsndfileError):
        sf.read(corpus / "clips" / ZERO_LENGTH)
    # the truncated file decodes to far less audio than clip_durations.tsv promises
    truncated, rate = sf.read(corpus / "clips" / TRUNCATED)
    assert len(truncated) / rate * 1000 < 0.6 * durations_ms[TRUNCATED]
    readme = (corpus.parent / "README.md").read_text(encoding="utf-8")
    assert all(clip in readme for clip in BAD_CLIPS)


def test_clips_are_48k_mono_speech_with_quiet_edges(
    corpus: Path, validated: list[dict[str, str]], durations_ms: dict[str, int]
) -> None:
    good = sorted(row["path"] for row in validated if row["path"] not in BAD_CLIPS)
    for path in good:
        audio, rate = sf.read(corpus / "clips" / path, dtype="float32")
        assert rate == 48_000 and audio.ndim == 1
        assert abs(len(audio) / rate * 1000 - durations_ms[path]) < 60
        edge = int(0.1 * rate)  # padding is at least 0.3 s, so the first/last 0.1 s is noise

        def rms(x: np.ndarray) -> float:
            return float(np.sqrt(np.mean(x**2)))

        middle = audio[len(audio) // 4: 3 * len(audio) // 4]
        assert rms(middle) > 10 * max(rms(audio[:edge]), rms(audio[-edge:]))  # >= 20 dB
        assert rms(audio[:edge]) > 0  # low noise, not digital silence

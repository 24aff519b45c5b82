"""Factories for the data tests make themselves, and fixtures that keep tests hermetic."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path_factory):
    """No Hub, no implicit token, caches in tmp, no progress bars."""
    cache = tmp_path_factory.mktemp("hf-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("PARLA_DISABLE_PROGRESS", "1")


# --- audio -----------------------------------------------------------------------------------

HAVE_ESPEAK = shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=64)
def _espeak(text: str, voice: str, speed: int) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
                       check=True, capture_output=True)
        samples, rate = sf.read(wav, dtype="float32")
    return samples, rate


def speech(text: str = "Bon dia a tothom.", sample_rate: int = 48000, voice: str = "ca+m3",
           speed: int = 160, pad_seconds: float = 0.2, seed: int = 0) -> np.ndarray:
    """Catalan speech from espeak-ng (a tone-burst stand-in without it), padded with faint noise."""
    from parla.audio import resample

    if HAVE_ESPEAK:
        samples, rate = _espeak(text, voice, speed)
        samples = resample(samples.astype(np.float32), rate, sample_rate) * 0.8
    else:
        n = int(sample_rate * max(0.06 * len(text), 0.5))
        t = np.arange(n) / sample_rate
        samples = (0.4 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0))
    rng = np.random.default_rng(seed)
    pad = int(pad_seconds * sample_rate)
    out = np.concatenate([np.zeros(pad), samples, np.zeros(pad)]).astype(np.float32)
    return out + rng.normal(0, 1e-3, out.size).astype(np.float32)


def tone(seconds: float, sample_rate: int = 48000, frequency: float = 220.0,
         amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def encode(samples: np.ndarray, sample_rate: int = 48000, fmt: str = "MP3") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def mp3_bytes() -> Callable[..., bytes]:
    """mp3_bytes(seconds=2.0, sample_rate=48000): an MP3 of a tone, with a length header."""
    def make(seconds: float = 2.0, sample_rate: int = 48000) -> bytes:
        return encode(tone(seconds, sample_rate), sample_rate)
    return make


# --- Common Voice release --------------------------------------------------------------------

CV_HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
             "down_votes", "age", "gender", "accents", "variant", "locale", "segment"]
SENTENCES = ["Bon dia a tothom.", "L'home camina pel carrer.", "El col·legi és a prop.",
             "Plou molt aquesta tarda.", "«Vols venir?» va preguntar.", "Tinc gana i set.",
             "La platja és plena de gent.", "Demà anirem a Tortosa."]


def speaker_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def write_cv_release(folder: Path, speakers: dict[str, tuple[str, int]], *, seconds: float = 1.5,
                     durations_tsv: bool = True, use_speech: bool = False,
                     extra_rows: list[dict[str, str]] | None = None) -> Path:
    """A raw Common Voice release: ``speakers = {name: (accent, clips)}``.

    Clips are tones (fast) unless ``use_speech``; each speaker's clips get slightly different
    lengths so duration filters and statistics have something to work on.
    """
    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows, durations = [], []
    number = 0
    for name, (accent, count) in speakers.items():
        for i in range(count):
            number += 1
            path = f"common_voice_ca_{number:06d}.mp3"
            sentence = SENTENCES[number % len(SENTENCES)]
            if use_speech:
                samples = speech(sentence, pad_seconds=0.2, seed=number)
            else:
                samples = tone(seconds + 0.1 * (i % 5), frequency=150 + 10 * (number % 7))
            (clips / path).write_bytes(encode(samples))
            rows.append({"client_id": speaker_id(name), "path": path, "sentence_id": str(number),
                         "sentence": sentence, "sentence_domain": "", "up_votes": "2",
                         "down_votes": "0", "age": "thirties", "gender": "male_masculine",
                         "accents": accent, "variant": "", "locale": "ca", "segment": ""})
            durations.append((path, str(round(samples.size / 48000 * 1000))))
    for extra in extra_rows or []:
        rows.append({key: "" for key in CV_HEADER} | {"locale": "ca", "up_votes": "2",
                                                     "down_votes": "0"} | extra)
    with open(folder / "validated.tsv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, CV_HEADER, delimiter="\t", quoting=csv.QUOTE_NONE,
                                escapechar=None, quotechar=None, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if durations_tsv:
        with open(folder / "clip_durations.tsv", "w", encoding="utf-8") as handle:
            handle.write("clip\tduration[ms]\n")
            handle.writelines(f"{path}\t{ms}\n" for path, ms in durations)
    return folder


@pytest.fixture
def cv_release(tmp_path) -> Callable[..., Path]:
    """cv_release(speakers, **kwargs) -> folder of a raw Common Voice release in tmp."""
    def make(speakers: dict[str, tuple[str, int]], name: str = "cv-release", **kwargs) -> Path:
        return write_cv_release(tmp_path / name, speakers, **kwargs)
    return make


@pytest.fixture
def demo_corpus() -> Path:
    from parla.demo import demo_corpus_path

    return demo_corpus_path()

"""report.html: the figures and players it holds, missing measurements, the dataset card's
summary, publishing it, and what headless Chromium shows of it."""

from __future__ import annotations

import fnmatch
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import encode, tone
from parla.card import render as card_render
from parla.demo import demo_corpus_path
from parla.hub import client as hub
from parla.options import PrepareOptions, PublishOptions
from parla.report import __main__ as report_main
from parla.report import build as report_build
from parla.report import figures as report_figures
from parla.store.layout import STATISTICS_FILE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DIALECTS = ("central", "balear")


class _Page(HTMLParser):
    """The page's plots, audio sources and sections."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[str] = []  # aria-labels of the plots
        self.audio: list[str] = []
        self.sections: list[str] = []
        self.missing: list[str] = []
        self._in_missing = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "svg":
            self.svgs.append(attributes.get("aria-label", ""))
        elif tag == "audio":
            self.audio.append(attributes.get("src", ""))
        elif tag == "section" and attributes.get("id"):
            self.sections.append(attributes["id"])
        elif tag == "figure" and attributes.get("class") == "missing":
            self._in_missing = True

    def handle_data(self, data):
        if self._in_missing:
            self.missing.append(data)
            self._in_missing = False


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _statistics(clips: list[dict]) -> dict:
    dialects = {}
    for name in DIALECTS:
        mine = [c for c in clips if c["dialect"] == name]
        dialects[name] = {
            "steps": [{"step": "loaded", "rows": len(mine) + 2, "speakers": 3, "hours": 0.01}],
            "rejected": {"low_snr": 1, "truncated": 1} if name == "central" else {},
            "output": {"rows": len(mine), "speakers": len({c["speaker_id"] for c in mine}),
                       "samples_per_speaker": 2.0, "hours": 0.004, "mean_duration": 2.1},
            "conditioning": {"mean_snr_db": 31.5}}
    return {"dialects": dialects,
            "total": {"rows": len(clips), "speakers": 5, "samples_per_speaker": 2.0,
                      "hours": 0.008, "mean_duration": 2.1, "rejected": 2, "train_rows": 8,
                      "validation_rows": 2,
                      "conditioning": {"leading_silence_s": {"before": 0.55, "after": 0.1},
                                       "lufs_std": {"before": 3.1, "after": 0.02},
                                       "mean_snr_db": 31.5}}}


def _clips(measured: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    clips = []
    for index in range(10):
        clip = {"dialect": DIALECTS[index % 2], "speaker_id": f"spk{index % 5}",
                "duration": 1.5 + index * 0.2}
        if measured:
            clip |= {"snr_db": 25 + rng.normal(0, 3), "chars_per_sec": 12 + rng.normal(0, 2),
                     "leading_silence_s_before": 0.5, "leading_silence_s_after": 0.1,
                     "trailing_silence_s_before": 0.4, "trailing_silence_s_after": 0.1,
                     "lufs_before": -25 + rng.normal(0, 3), "lufs_after": -20.0,
                     "dnsmos_ovrl": 2.0 + index / 10, "dnsmos_sig": 3.0, "dnsmos_bak": 3.5}
        clips.append(clip)
    return clips


def _samples(with_source: bool) -> dict:
    return {name: [{"text": f"Bon dia {i}.", "speaker_id": f"spk{i}",
                    "audio": encode(tone(0.5 + i / 4, 24000), 24000, "FLAC"),
                    "source": encode(tone(0.8, 48000), 48000, "MP3") if with_source else None,
                    "source_suffix": ".mp3"} for i in range(2)]
            for name in DIALECTS}


REJECTS = [{"source_path": "a.mp3", "dialect": "central", "reason": "low_snr", "detail": "3 dB"},
           {"source_path": "b.mp3", "dialect": "central", "reason": "truncated", "detail": ""}]


# --- the page --------------------------------------------------------------------------------

def test_report_has_every_figure_and_player(tmp_path: Path) -> None:
    clips = _clips(measured=True)
    path = report_build.write_report(tmp_path, _statistics(clips), clips, REJECTS, _samples(True))
    assert path == tmp_path / "report.html"
    page = parse(path)
    assert page.sections == list(DIALECTS)
    # per section (all dialects + each dialect): 4 histograms, speakers, 3 before/after, rejects
    per_section = 9
    assert len(page.svgs) == per_section * 3 - 1  # balear rejected nothing: one note instead
    assert page.missing == ["Rejected clips by reason: none rejected"]
    labels = " ".join(page.svgs)
    for title in ("Clip duration", "Estimated SNR", "Speaking rate", "DNSMOS overall",
                  "Clips per speaker", "Leading silence", "Trailing silence", "Loudness",
                  "Rejected clips by reason: low_snr 1, truncated 1"):
        assert title in labels
    assert len(page.audio) == 2 * 2 * len(DIALECTS)  # conditioned + source per sample
    for source in page.audio:
        assert not source.startswith(("/", "http")) and (tmp_path / source).is_file()


def test_all_dialects_add_up_the_rejects_of_every_dialect(tmp_path: Path) -> None:
    clips = _clips(measured=True)
    rejects = REJECTS + [{"source_path": "c.mp3", "dialect": "balear", "reason": "low_snr"}]
    page = parse(report_build.write_report(tmp_path, _statistics(clips), clips, rejects, {}))
    assert page.svgs.count("Rejected clips by reason: low_snr 2, truncated 1") == 1


def test_missing_measurements_are_said_not_drawn(tmp_path: Path) -> None:
    """--no_condition_audio, no --dnsmos, no source clips: the report still works."""
    clips = _clips(measured=False)
    path = report_build.write_report(tmp_path, _statistics(clips), clips, [], _samples(False))
    page = parse(path)
    notes = " ".join(page.missing)
    assert "DNSMOS overall (OVRL): not scored in this run" in notes
    assert "Loudness: not measured (audio conditioning was off)" in notes
    assert "Estimated SNR: not measured" in notes
    assert any("Clip duration" in label for label in page.svgs)
    assert len(page.audio) == 2 * len(DIALECTS)
    assert "source clip not available" in path.read_text(encoding="utf-8")


def test_rebuilding_replaces_old_samples_and_is_deterministic(tmp_path: Path) -> None:
    clips = _clips(measured=True)
    report_build.write_report(tmp_path, _statistics(clips), clips, REJECTS, _samples(True))
    first = (tmp_path / "report.html").read_bytes()
    stale = tmp_path / "report" / "audio" / "gone" / "0-conditioned.flac"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    report_build.write_report(tmp_path, _statistics(clips), clips, REJECTS, _samples(True))
    assert (tmp_path / "report.html").read_bytes() == first
    assert not stale.exists()


def test_text_is_escaped(tmp_path: Path) -> None:
    clips = _clips(measured=True)
    samples = _samples(False)
    samples["central"][0]["text"] = "<script>alert(1)</script>"
    path = report_build.write_report(tmp_path, _statistics(clips), clips, REJECTS, samples)
    assert "<script>" not in path.read_text(encoding="utf-8")


# --- the card and publishing -----------------------------------------------------------------

def test_card_summary_has_the_key_figures_and_the_link() -> None:
    text = card_render.card_summary(_statistics(_clips(measured=True)))
    assert text.startswith("## Report")
    assert "10 clips from 5 speakers" in text and "2 dialects" in text
    assert "2 clips rejected (low_snr 1, truncated 1)" in text
    assert "leading silence 0.55 → 0.10 s" in text and "loudness spread 3.10 → 0.02 LU" in text
    assert "[report.html](report.html)" in text


def test_card_embeds_the_summary_and_publish_uploads_the_report(fake_hub, prepared_folder):
    folder = prepared_folder({"central": 2, "balear": 1})
    clips = _clips(measured=True)
    statistics = _statistics(clips)
    (folder / STATISTICS_FILE).write_text(json.dumps(statistics), encoding="utf-8")
    assert "## Report" not in (folder / "README.md").read_text(encoding="utf-8")  # no page yet
    report_build.write_report(folder, statistics, clips, REJECTS, _samples(True))
    hub.upload_folder(PublishOptions(folder=str(folder), repo_id="tester/cv_ca"))
    uploaded = fake_hub.repos["tester/cv_ca"]
    report_files = {str(p.relative_to(folder)) for p in folder.rglob("*")
                    if p.is_file() and p.relative_to(folder).parts[0] in ("report.html", "report")}
    assert "report.html" in report_files and len(report_files) == 1 + 2 * 2 * len(DIALECTS)
    assert report_files <= set(uploaded)
    assert not any(fnmatch.fnmatch(name, pattern) for name in report_files
                   for pattern in hub.UPLOAD_IGNORE_PATTERNS)
    card = uploaded["README.md"].decode()
    assert card_render.card_summary(statistics, "tester/cv_ca") in card
    assert "hf download tester/cv_ca --repo-type dataset" in card


# --- a real prepared folder in headless Chromium ----------------------------------------------

@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    """The demo corpus prepared with the defaults, and its report built from the folder."""
    from parla.stages.prepare import prepare

    out = tmp_path_factory.mktemp("demo") / "prepared"
    prepare(PrepareOptions(datasets=(str(demo_corpus_path()),), output_dir=str(out),
                           num_workers=1, max_samples_per_speaker=8))
    assert report_main.main([str(out), "--sources", str(demo_corpus_path())]) == 0
    return out


def test_report_of_a_prepared_folder(demo_report: Path) -> None:
    statistics = json.loads((demo_report / STATISTICS_FILE).read_text(encoding="utf-8"))
    page = parse(demo_report / "report.html")
    assert page.sections == list(statistics["dialects"])
    labels = " ".join(page.svgs)
    total_rows = statistics["total"]["rows"]
    assert f"Clip duration: {total_rows} values" in labels
    assert f"Loudness, before and after conditioning: {2 * total_rows} values" in labels
    assert len(page.audio) == 2 * report_build.SAMPLES_PER_DIALECT * len(statistics["dialects"])
    for source in page.audio:  # every player plays a real clip: the conditioned and its source
        samples, rate = sf.read(io.BytesIO((demo_report / source).read_bytes()))
        assert samples.size > 0.5 * rate and rate in (24000, 48000)
        assert source.endswith("-conditioned.flac") == (rate == 24000)


@pytest.mark.needs_system_tool(CHROMIUM is not None,
                               reason="needs chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(demo_report: Path, tmp_path: Path) -> None:
    from PIL import Image

    screenshot = tmp_path / "report.png"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={screenshot}", "--window-size=1200,2000",
         (demo_report / "report.html").resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert screenshot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("RGB"), dtype=np.int16)
    assert pixels.shape[:2] == (2000, 1200)
    background = np.array([0xf6, 0xf7, 0xf9])
    assert (np.abs(pixels - background).sum(axis=2) > 30).mean() > 0.1  # not a blank page
    # the plots' bars were drawn: many pixels of the bar colour (#1f77b4, blended or not)
    bars = np.abs(pixels - np.array([0x1f, 0x77, 0xb4])).sum(axis=2) < 40
    assert bars.sum() > 5000
    # every audio source the page names resolves next to it
    page = parse(demo_report / "report.html")
    missing = [s for s in page.audio if not (demo_report / s).is_file()]
    assert page.audio and not missing
    assert re.search(r"<audio controls", (demo_report / "report.html").read_text("utf-8"))


def test_many_speakers_are_drawn_as_a_histogram() -> None:
    few = report_figures.speaker_bars_svg("Clips per speaker", [5, 3, 3])
    many = report_figures.speaker_bars_svg("Clips per speaker", [50] * 400 + [10] * 100)
    assert few.count("<rect") == 3
    assert "500 speakers" in many and many.count("<rect") < 40
    assert report_figures.speaker_bars_svg("Clips per speaker", []) is None


def test_rebuilding_from_a_folder_that_is_not_prepared_is_one_line(tmp_path, capsys) -> None:
    assert report_main.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no dialect_statistics.json" in err
    assert not (tmp_path / "report.html").exists()


def test_the_report_of_a_prepared_folder_on_a_store_is_rebuilt_there(demo_report: Path,
                                                                     memory_store: str) -> None:
    """`python -m parla.report <URL>`: the folder is read and the page written on the store."""
    import fsspec

    fs = fsspec.filesystem("memory")
    root = memory_store.removeprefix("memory://")
    fs.put(str(demo_report), root, recursive=True)
    fs.rm(f"{root}/report.html")
    assert report_main.main([memory_store, "--sources", str(demo_corpus_path())]) == 0
    page = fs.cat_file(f"{root}/report.html").decode("utf-8")
    assert page == (demo_report / "report.html").read_text(encoding="utf-8")

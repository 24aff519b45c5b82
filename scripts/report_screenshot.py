#!/usr/bin/env python3
"""Draw docs/images/report.png: the demo corpus prepared with the defaults, DNSMOS-scored when
the parla[quality] extra is installed, its report.html rendered by headless Chromium.

Usage: python scripts/report_screenshot.py [--out docs/images/report.png] [--work /tmp/x]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from parla.audio.decode import decode_flac
from parla.demo import demo_corpus_path
from parla.options import PrepareOptions
from parla.report import build as report_build
from parla.stages.prepare import prepare
from parla.store.shards import find_shards, read_shard


def dnsmos_by_clip(folder: Path) -> dict[tuple[str, str], dict[str, float]]:
    """DNSMOS of every clip of the dialect configs, keyed by (dialect, source_path)."""
    from parla.conditioning.dnsmos import DnsmosScorer

    scorer = DnsmosScorer()
    scores = {}
    for config, splits in find_shards(folder).items():
        if config == "all":
            continue
        for paths in splits.values():
            for path in paths:
                for row in read_shard(path, ["audio", "dialect", "source_path"]).to_pylist():
                    samples, rate = decode_flac(row["audio"]["bytes"])
                    scores[(row["dialect"], row["source_path"])] = scorer(samples, rate)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/report.png")
    parser.add_argument("--work", default=None, help="folder for the prepared demo (default tmp)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="parla-report-"))
    folder = work / "prepared"
    prepare(PrepareOptions(datasets=(str(demo_corpus_path()),), output_dir=str(folder),
                           overwrite=True, num_workers=1, max_samples_per_speaker=8))
    data = report_build.read_prepared_folder(folder, [str(demo_corpus_path())])
    try:
        scores = dnsmos_by_clip(folder)
    except Exception as error:  # the extra is optional here: the figure then says "not scored"
        print(f"no DNSMOS scores ({error})")
        scores = {}
    for clip in data["clips"]:
        clip.update(scores.get((clip.get("dialect"), clip.get("source_path")), {}))
    page = report_build.write_report(folder, data["statistics"], data["clips"], data["rejects"],
                               data["samples"])
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs chromium (apt-get install chromium)")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", f"--user-data-dir={work / 'profile'}",
                    f"--screenshot={Path(args.out).resolve()}", "--window-size=1200,2000",
                    page.resolve().as_uri()], check=True, capture_output=True)
    print(f"wrote {args.out} from {page}")


if __name__ == "__main__":
    main()

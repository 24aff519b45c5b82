"""report.html: a prepared corpus to look at and listen to, written beside the data.

The figures are inline SVG drawn here from the numbers (histograms and bars need nothing more):
no plotting dependency, the same bytes on every machine, text a test can read, and a page that
opens offline. The sample clips are files under ``report/`` beside the page.

`write_report` and `render_report` take plain data (documented on `write_report`); reading a
prepared folder into that data is `read_prepared_folder`, kept apart so that a new folder layout
changes only that function. ``python -m parla.report FOLDER`` (re)builds the report of a folder.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parla.store.files import write_bytes_atomic

REPORT_FILE = "report.html"
REPORT_DIR = "report"
SAMPLES_PER_DIALECT = 3

# (key in a clip dict, title, unit) of the per-dialect histograms
_HISTOGRAMS = (
    ("duration", "Clip duration", "s"),
    ("snr_db", "Estimated SNR", "dB"),
    ("chars_per_sec", "Speaking rate", "characters/s"),
    ("dnsmos_ovrl", "DNSMOS overall (OVRL)", "MOS"),
)
# (title, unit, before key, after key) of the before/after conditioning figures
_BEFORE_AFTER = (
    ("Leading silence", "s", "leading_silence_s_before", "leading_silence_s_after"),
    ("Trailing silence", "s", "trailing_silence_s_before", "trailing_silence_s_after"),
    ("Loudness", "LUFS", "lufs_before", "lufs_after"),
)
_BEFORE, _AFTER, _BAR = "#9aa5b1", "#1f77b4", "#d9534f"
_WIDTH, _HEIGHT = 380, 210
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 20, 26, 34


# --- the figures (pure: numbers in, SVG text out) ---------------------------------------------

def _num(value: float) -> str:
    """Axis labels: short, and the same text on every machine."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _svg(title: str, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {_WIDTH} '
            f'{_HEIGHT}" role="img" aria-label="{html.escape(label)}">'
            f'<text x="{_WIDTH / 2}" y="16" text-anchor="middle" class="title">'
            f'{html.escape(title)}</text>' + "".join(body) + "</svg>")


def _axes(x_low: float, x_high: float, y_high: float, unit: str, y_label: str) -> list[str]:
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    base = _TOP + plot_h
    parts = [f'<line x1="{_LEFT}" y1="{base}" x2="{_WIDTH - _RIGHT}" y2="{base}" '
             f'class="axis"/>',
             f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{base}" class="axis"/>',
             f'<text x="{_LEFT - 4}" y="{_TOP + 4}" text-anchor="end">{_num(y_high)}</text>',
             f'<text x="{_LEFT - 4}" y="{base}" text-anchor="end">0</text>',
             f'<text x="12" y="{_TOP + plot_h / 2}" text-anchor="middle" '
             f'transform="rotate(-90 12 {_TOP + plot_h / 2})">{html.escape(y_label)}</text>',
             f'<text x="{_LEFT + plot_w / 2}" y="{_HEIGHT - 4}" text-anchor="middle">'
             f'{html.escape(unit)}</text>']
    for tick in np.linspace(x_low, x_high, 5):
        x = _LEFT + (tick - x_low) / (x_high - x_low) * plot_w
        parts.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" '
                     f'class="axis"/><text x="{x:.1f}" y="{base + 15}" '
                     f'text-anchor="middle">{_num(float(tick))}</text>')
    return parts


def _finite(values: Iterable[Any]) -> np.ndarray:
    array = np.array([v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)],
                     dtype=np.float64)
    return array[np.isfinite(array)]


def histogram_svg(title: str, unit: str, series: Sequence[tuple[str, Sequence[float], str]],
                  bins: int = 30, counted: str = "clips") -> str | None:
    """Overlaid histograms of ``series`` ((label, values, colour)) on shared bins; None when
    there is no value to draw."""
    arrays = [(label, _finite(values), colour) for label, values, colour in series]
    pooled = np.concatenate([values for _, values, _ in arrays]) if arrays else np.zeros(0)
    if pooled.size == 0:
        return None
    low, high = float(pooled.min()), float(pooled.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    counts = [np.histogram(values, edges)[0] for _, values, _ in arrays]
    y_high = max(int(c.max()) for c in counts) or 1
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    bar_w = plot_w / bins
    body = _axes(low, high, y_high, unit, counted)
    for (_, _, colour), count in zip(arrays, counts, strict=True):
        opacity = "0.55" if len(arrays) > 1 else "0.9"
        for index, n in enumerate(count):
            if n:
                height = n / y_high * plot_h
                body.append(f'<rect x="{_LEFT + index * bar_w:.1f}" '
                            f'y="{_TOP + plot_h - height:.1f}" '
                            f'width="{max(bar_w - 1, 0.5):.1f}" height="{height:.1f}" '
                            f'fill="{colour}" fill-opacity="{opacity}"/>')
    if len(arrays) > 1:
        for position, (label, values, colour) in enumerate(arrays):
            x = _WIDTH - _RIGHT - 150
            y = _TOP + 6 + position * 14
            mean = f", mean {_num(float(values.mean()))}" if values.size else ""
            body.append(f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{colour}"/>'
                        f'<text x="{x + 14}" y="{y + 1}">{html.escape(label)}{mean}</text>')
    label = f"{title}: {pooled.size} values from {_num(low)} to {_num(high)} {unit}"
    return _svg(title, body, label)


MAX_SPEAKER_BARS = 300  # beyond this, a histogram of speakers by clip count


def speaker_bars_svg(title: str, clips_per_speaker: Sequence[int]) -> str | None:
    """One bar per speaker, most clips first (a balanced corpus is a flat profile); with many
    speakers, how many speakers have how many clips."""
    counts = sorted((int(c) for c in clips_per_speaker), reverse=True)
    if not counts:
        return None
    if len(counts) > MAX_SPEAKER_BARS:
        bins = min(30, max(counts) - min(counts) + 1)
        return histogram_svg(f"{title} ({len(counts)} speakers)", "clips per speaker",
                             [(title, counts, _AFTER)], bins=bins, counted="speakers")
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    y_high = max(counts)
    bar_w = plot_w / len(counts)
    body = [f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_WIDTH - _RIGHT}" '
            f'y2="{_TOP + plot_h}" class="axis"/>',
            f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" class="axis"/>',
            f'<text x="{_LEFT - 4}" y="{_TOP + 4}" text-anchor="end">{y_high}</text>',
            f'<text x="{_LEFT - 4}" y="{_TOP + plot_h}" text-anchor="end">0</text>',
            f'<text x="{_LEFT + plot_w / 2}" y="{_HEIGHT - 4}" text-anchor="middle">'
            f'{len(counts)} speakers, most clips first</text>',
            f'<text x="12" y="{_TOP + plot_h / 2}" text-anchor="middle" '
            f'transform="rotate(-90 12 {_TOP + plot_h / 2})">clips</text>']
    for index, count in enumerate(counts):
        height = count / y_high * plot_h
        body.append(f'<rect x="{_LEFT + index * bar_w:.2f}" y="{_TOP + plot_h - height:.1f}" '
                    f'width="{max(bar_w * 0.85, 0.3):.2f}" height="{height:.1f}" '
                    f'fill="{_AFTER}"/>')
    label = (f"{title}: {len(counts)} speakers, {min(counts)} to {max(counts)} clips each")
    return _svg(title, body, label)


def reason_bars_svg(title: str, counts: Mapping[str, int]) -> str | None:
    """Horizontal bars, one per reject reason, most frequent first."""
    items = sorted(((reason, int(n)) for reason, n in counts.items() if n),
                   key=lambda item: (-item[1], item[0]))
    if not items:
        return None
    label_w, row_h = 150, 18
    height = _TOP + row_h * len(items) + 8
    top = max(n for _, n in items)
    body = []
    for index, (reason, n) in enumerate(items):
        y = _TOP + index * row_h
        width = n / top * (_WIDTH - label_w - 50)
        body.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">'
                    f'{html.escape(reason)}</text><rect x="{label_w}" y="{y + 2}" '
                    f'width="{max(width, 1):.1f}" height="{row_h - 5}" fill="{_BAR}"/>'
                    f'<text x="{label_w + width + 4:.1f}" y="{y + 12}">{n}</text>')
    label = f"{title}: " + ", ".join(f"{reason} {n}" for reason, n in items)
    svg = _svg(title, body, label)
    return svg.replace(f'viewBox="0 0 {_WIDTH} {_HEIGHT}"', f'viewBox="0 0 {_WIDTH} {height}"', 1)


# --- the page ----------------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2733;
background:#f6f7f9}
header,section{max-width:1180px;margin:0 auto;padding:14px 22px}
header{background:#1d2733;color:#fff;max-width:none}header h1{margin:4px 0;font-size:22px}
h2{border-bottom:2px solid #d5dbe1;padding-bottom:4px;margin-top:26px}
table{border-collapse:collapse;margin:8px 0;background:#fff}
th,td{border:1px solid #d5dbe1;padding:3px 9px;text-align:right}
th:first-child,td:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:10px}
figure{margin:0;background:#fff;border:1px solid #d5dbe1;border-radius:4px;padding:4px}
figure.missing{color:#6b7785;padding:16px;font-style:italic}
svg.plot{width:100%;height:auto;font-size:10px;fill:#1d2733}
svg .title{font-size:12px;font-weight:600}svg .axis{stroke:#6b7785;stroke-width:1}
.key{font-size:15px}.key b{font-size:17px}
.sample{background:#fff;border:1px solid #d5dbe1;border-radius:4px;padding:8px;margin:6px 0}
.sample audio{height:32px;vertical-align:middle;margin-right:10px}
.muted{color:#6b7785}nav a{margin-right:12px}
"""


def _figure(svg: str | None, missing: str) -> str:
    if svg is None:
        return f'<figure class="missing">{html.escape(missing)}</figure>'
    return f"<figure>{svg}</figure>"


def _hours(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    return f"{float(value):.2f}" if value >= 1 else f"{float(value):.3f}"


def _key_figures(output: Mapping[str, Any], rejected: int) -> str:
    return (f'<p class="key"><b>{output.get("rows", 0)}</b> clips · '
            f'<b>{output.get("speakers", 0)}</b> speakers · <b>{_hours(output.get("hours"))}</b>'
            f' hours · {output.get("samples_per_speaker", 0)} clips per speaker · mean '
            f'{output.get("mean_duration", 0)} s · {rejected} rejected</p>')


def _steps_table(steps: Sequence[Mapping[str, Any]]) -> str:
    if not steps:
        return ""
    rows = "".join(f"<tr><td>{html.escape(str(s.get('step', '')))}</td><td>{s.get('rows', '')}"
                   f"</td><td>{s.get('speakers', '')}</td><td>{_hours(s.get('hours'))}</td></tr>"
                   for s in steps)
    return ("<details><summary>Selection steps</summary><table><tr><th>step</th><th>rows</th>"
            f"<th>speakers</th><th>hours</th></tr>{rows}</table></details>")


def _dialect_figures(clips: Sequence[Mapping[str, Any]], rejected: Mapping[str, int]) -> str:
    figures = []
    for key, title, unit in _HISTOGRAMS:
        values = [clip.get(key) for clip in clips]
        missing = ("not scored in this run (prepare --dnsmos)" if key.startswith("dnsmos")
                   else "not measured in this run")
        figures.append(_figure(histogram_svg(title, unit, [(title, values, _AFTER)]),
                               f"{title}: {missing}"))
    speakers = Counter(str(clip.get("speaker_id")) for clip in clips)
    figures.append(_figure(speaker_bars_svg("Clips per speaker", list(speakers.values())),
                           "Clips per speaker: no clips"))
    for title, unit, before, after in _BEFORE_AFTER:
        svg = histogram_svg(f"{title}, before and after conditioning", unit,
                            [("before", [c.get(before) for c in clips], _BEFORE),
                             ("after", [c.get(after) for c in clips], _AFTER)])
        figures.append(_figure(svg, f"{title}: not measured (audio conditioning was off)"))
    figures.append(_figure(reason_bars_svg("Rejected clips by reason", rejected),
                           "Rejected clips by reason: none rejected"))
    return '<div class="grid">' + "".join(figures) + "</div>"


def _samples_html(samples: Sequence[Mapping[str, Any]]) -> str:
    if not samples:
        return '<p class="muted">No sample clips.</p>'
    parts = ["<h3>Listen</h3>"]
    for sample in samples:
        source = (f'<span class="muted">source, before conditioning:</span> <audio controls '
                  f'preload="none" src="{html.escape(sample["source"])}"></audio>'
                  if sample.get("source") else
                  '<span class="muted">(source clip not available)</span>')
        speaker = html.escape(str(sample.get("speaker_id", ""))[:12])
        parts.append(f'<div class="sample"><div>{html.escape(str(sample.get("text", "")))} '
                     f'<span class="muted">· speaker {speaker}</span></div>'
                     f'<span class="muted">conditioned:</span> <audio controls '
                     f'preload="none" src="{html.escape(sample["audio"])}"></audio>{source}</div>')
    return "".join(parts)


def _summary_table(statistics: Mapping[str, Any]) -> str:
    rows = []
    for name, dialect in statistics.get("dialects", {}).items():
        output = dialect.get("output", {})
        snr = (dialect.get("conditioning") or {}).get("mean_snr_db")
        rows.append(f'<tr><td><a href="#{html.escape(name)}">{html.escape(name)}</a></td>'
                    f'<td>{output.get("rows", 0)}</td><td>{output.get("speakers", 0)}</td>'
                    f'<td>{_hours(output.get("hours"))}</td>'
                    f'<td>{output.get("samples_per_speaker", 0)}</td>'
                    f'<td>{output.get("mean_duration", 0)}</td>'
                    f'<td>{"—" if snr is None else _num(snr)}</td>'
                    f'<td>{sum((dialect.get("rejected") or {}).values())}</td></tr>')
    total = statistics.get("total", {})
    rows.append(f'<tr><th>total</th><th>{total.get("rows", 0)}</th>'
                f'<th>{total.get("speakers", 0)}</th><th>{_hours(total.get("hours"))}</th>'
                f'<th>{total.get("samples_per_speaker", 0)}</th>'
                f'<th>{total.get("mean_duration", 0)}</th><th></th>'
                f'<th>{total.get("rejected", 0)}</th></tr>')
    return ("<table><tr><th>dialect</th><th>clips</th><th>speakers</th><th>hours</th>"
            "<th>clips/speaker</th><th>mean s</th><th>mean SNR dB</th><th>rejected</th></tr>"
            + "".join(rows) + "</table>")


def render_report(statistics: Mapping[str, Any], clips: Sequence[Mapping[str, Any]],
                  rejects: Sequence[Mapping[str, Any]],
                  sample_files: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """The page's HTML. ``sample_files`` is `write_report`'s ``samples`` with ``audio`` and
    ``source`` replaced by paths relative to the page. Pure: same inputs, same text."""
    dialects = list(statistics.get("dialects", {}))
    for name in sorted({str(c.get("dialect")) for c in clips} - set(dialects)):
        dialects.append(name)  # clips of a dialect the statistics do not list: still shown
    total = statistics.get("total", {})
    by_dialect: dict[str, list[Mapping[str, Any]]] = {name: [] for name in dialects}
    for clip in clips:
        by_dialect[str(clip.get("dialect"))].append(clip)
    reject_counts: dict[str, Counter] = {}
    for reject in rejects:
        reject_counts.setdefault(str(reject.get("dialect") or "unknown"), Counter())[
            str(reject.get("reason"))] += 1
    body = [f"<header><h1>Corpus report</h1>{_key_figures(total, total.get('rejected', 0))}"
            f'<p class="muted">{len(dialects)} dialects · {total.get("train_rows", "—")} train / '
            f'{total.get("validation_rows", "—")} validation rows · from dialect_statistics.json '
            f"and rejects.jsonl beside this page</p></header>",
            "<section><nav>" + "".join(f'<a href="#{html.escape(n)}">{html.escape(n)}</a>'
                                       for n in dialects) + "</nav>",
            "<h2>All dialects</h2>", _summary_table(statistics),
            _dialect_figures(clips, sum(reject_counts.values(), Counter()) if rejects
                             else _total_rejected(statistics)),
            "</section>"]
    for name in dialects:
        entry = statistics.get("dialects", {}).get(name, {})
        rejected = dict(entry.get("rejected") or reject_counts.get(name, {}))
        body += [f'<section id="{html.escape(name)}"><h2>{html.escape(name)}</h2>',
                 _key_figures(entry.get("output", {}), sum(rejected.values())),
                 _steps_table(entry.get("steps", [])),
                 _dialect_figures(by_dialect[name], rejected),
                 _samples_html(sample_files.get(name, [])), "</section>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Corpus report</title><style>{_STYLE}</style></head><body>"
            + "\n".join(body) + "\n</body></html>\n")


def _total_rejected(statistics: Mapping[str, Any]) -> Counter:
    total: Counter = Counter()
    for dialect in statistics.get("dialects", {}).values():
        total.update(dialect.get("rejected") or {})
    return total


# --- writing -----------------------------------------------------------------------------------

def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text) or "x"


def _write_samples(out: Path, samples: Mapping[str, Sequence[Mapping[str, Any]]]
                   ) -> dict[str, list[dict[str, Any]]]:
    written: dict[str, list[dict[str, Any]]] = {}
    for dialect, items in samples.items():
        folder = out / REPORT_DIR / "audio" / _safe_name(dialect)
        for index, item in enumerate(items):
            folder.mkdir(parents=True, exist_ok=True)
            entry = {"text": item.get("text", ""), "speaker_id": item.get("speaker_id", "")}
            conditioned = folder / f"{index}-conditioned.flac"
            write_bytes_atomic(conditioned, item["audio"])
            entry["audio"] = conditioned.relative_to(out).as_posix()
            entry["source"] = None
            if item.get("source"):
                suffix = "." + _safe_name(str(item.get("source_suffix") or ".mp3").lstrip("."))
                source = folder / f"{index}-source{suffix}"
                write_bytes_atomic(source, item["source"])
                entry["source"] = source.relative_to(out).as_posix()
            written.setdefault(dialect, []).append(entry)
    return written


def write_report(out_dir: str | os.PathLike, statistics: Mapping[str, Any],
                 clips: Sequence[Mapping[str, Any]], rejects: Sequence[Mapping[str, Any]],
                 samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Write ``<out_dir>/report.html`` and its sample clips under ``<out_dir>/report/``.

    Everything is plain data:

    - ``statistics``: the ``dialect_statistics.json`` dict (`prepare.build_statistics`):
      ``dialects`` -> name -> {``steps``: [{step, rows, speakers, hours}], ``rejected``:
      {reason: count}, ``output``: {rows, speakers, samples_per_speaker, hours, mean_duration},
      ``conditioning``: {..., mean_snr_db}}, and ``total`` (the same output keys plus rejected,
      train_rows, validation_rows). Missing keys show as "—".
    - ``clips``: one dict per kept clip: ``dialect``, ``speaker_id``, ``duration`` and, where
      measured, ``snr_db``, ``chars_per_sec``, ``duration_s_before``/``_after``,
      ``leading_silence_s_before``/``_after``, ``trailing_silence_s_before``/``_after``,
      ``lufs_before``/``_after``, ``dnsmos_ovrl``/``_sig``/``_bak``. Any of the measured keys
      may be missing (``--no_condition_audio``, no ``--dnsmos``): that figure then says so.
    - ``rejects``: the ``rejects.jsonl`` dicts (source_path, dialect, reason, detail).
    - ``samples``: dialect -> a few {``text``, ``speaker_id``, ``audio``: conditioned FLAC bytes,
      ``source``: the original clip's bytes or None, ``source_suffix``: e.g. ``.mp3``}.

    The ``report/`` folder is parla's: it is replaced on every call. Returns the page's path.
    """
    out = Path(out_dir)
    shutil.rmtree(out / REPORT_DIR, ignore_errors=True)
    sample_files = _write_samples(out, samples)
    page = render_report(statistics, clips, rejects, sample_files)
    write_bytes_atomic(out / REPORT_FILE, page.encode("utf-8"))
    return out / REPORT_FILE


def card_summary(statistics: Mapping[str, Any], repo_id: str | None = None) -> str:
    """Markdown for the dataset card: the key figures and a link to report.html.

    Reads ``statistics["total"]`` (and ``mean_dnsmos_ovrl`` there, when a run scored DNSMOS).
    """
    total = statistics.get("total", {})
    dialects = statistics.get("dialects", {})
    lines = ["## Report", "",
             f"- {total.get('rows', 0)} clips from {total.get('speakers', 0)} speakers, "
             f"{_hours(total.get('hours'))} hours, {len(dialects)} dialects; "
             f"{total.get('samples_per_speaker', 0)} clips per speaker, mean "
             f"{total.get('mean_duration', 0)} s."]
    rejected = _total_rejected(statistics)
    if rejected:
        top = ", ".join(f"{reason} {n}" for reason, n in
                        sorted(rejected.items(), key=lambda item: (-item[1], item[0]))[:4])
        lines.append(f"- {total.get('rejected', sum(rejected.values()))} clips rejected "
                     f"({top}).")
    conditioning = total.get("conditioning") or {}
    leading = conditioning.get("leading_silence_s") or {}
    spread = conditioning.get("lufs_std") or {}
    facts = []
    if leading.get("before") is not None and leading.get("after") is not None:
        facts.append(f"leading silence {leading['before']:.2f} → {leading['after']:.2f} s")
    if spread.get("before") is not None and spread.get("after") is not None:
        facts.append(f"loudness spread {spread['before']:.2f} → {spread['after']:.2f} LU")
    if conditioning.get("mean_snr_db") is not None:
        facts.append(f"mean estimated SNR {conditioning['mean_snr_db']:.1f} dB")
    if total.get("mean_dnsmos_ovrl") is not None:
        facts.append(f"mean DNSMOS OVRL {total['mean_dnsmos_ovrl']:.2f}")
    if facts:
        lines.append("- Conditioning: " + "; ".join(facts) + ".")
    lines += ["", f"[{REPORT_FILE}]({REPORT_FILE}) has, per dialect, histograms of duration, "
              "SNR, speaking rate and DNSMOS, clips per speaker, silence and loudness before "
              "and after conditioning, rejects by reason, and sample clips to listen to. It "
              "opens offline: download it with its `report/` folder "
              f"(`hf download {repo_id or '<user>/<dataset>'} --repo-type dataset --include "
              f"'{REPORT_FILE}' '{REPORT_DIR}/*'`) and open it in a browser."]
    return "\n".join(lines)


# --- reading a prepared folder (today's layout) ------------------------------------------------

def read_prepared_folder(folder: str | os.PathLike, source_dirs: Sequence[str | os.PathLike] = (),
                         samples_per_dialect: int = SAMPLES_PER_DIALECT) -> dict[str, Any]:
    """`write_report`'s inputs from a prepared folder: its statistics and rejects, and the
    per-clip measurements from its shards' footer records. Source clips are looked up as
    ``clips/<source_path>`` or ``<source_path>`` under each of ``source_dirs``."""
    from parla.errors import UsageError
    from parla.report.statistics import REJECTS_FILE, STATISTICS_FILE
    from parla.stages.prepare_worker import STAGE
    from parla.store.shards import find_shards, read_shard_record

    out = Path(folder)
    if not (out / STATISTICS_FILE).is_file():
        raise UsageError(f"{out} has no {STATISTICS_FILE}: not a prepared folder")
    statistics = json.loads((out / STATISTICS_FILE).read_text(encoding="utf-8"))
    rejects_path = out / REJECTS_FILE
    rejects = ([json.loads(line) for line in rejects_path.read_text(encoding="utf-8").splitlines()
                if line.strip()] if rejects_path.is_file() else [])
    records = [record for splits in find_shards(out).values() for paths in splits.values()
               for path in paths if (record := read_shard_record(path, STAGE)) is not None]
    return {"statistics": statistics, "clips": report_clips(records), "rejects": rejects,
            "samples": collect_samples(out, samples_per_dialect,
                                       lambda row: _source_from_dirs(row, source_dirs))}


def report_clips(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per kept clip from the shards' records, missing measurements left out."""
    from parla.report.statistics import clips_table

    return [{key: value for key, value in clip.items()
             if value is not None and not (isinstance(value, float) and np.isnan(value))}
            for clip in clips_table(records).to_dict("records")]


def collect_samples(folder: Path, samples_per_dialect: int,
                    read_source: Any) -> dict[str, list[dict[str, Any]]]:
    """The first rows of each dialect's first train shard (or validation), as report samples;
    ``read_source(row)`` gives the row's original clip bytes, or None."""
    import pyarrow.parquet as pq

    from parla.dialects import DIALECTS
    from parla.store.shards import find_shards

    samples: dict[str, list[dict[str, Any]]] = {}
    for config, splits in sorted(find_shards(folder).items()):
        if config not in DIALECTS:
            continue
        for path in [p for split in ("train", "validation") for p in splits.get(split, [])]:
            wanted = samples_per_dialect - len(samples.get(config, []))
            parquet = pq.ParquetFile(path)
            if wanted <= 0:
                break
            if parquet.metadata.num_row_groups:
                first = parquet.read_row_group(0).slice(0, wanted).to_pylist()
                samples.setdefault(config, []).extend(_sample(row, read_source(row))
                                                      for row in first)
    return samples


def _source_from_dirs(row: Mapping[str, Any], source_dirs: Sequence[str | os.PathLike]
                      ) -> bytes | None:
    source_path = str(row.get("source_path") or "")
    if source_path and not Path(source_path).is_absolute() and ".." not in Path(source_path).parts:
        for base in source_dirs:
            for candidate in (Path(base) / "clips" / source_path, Path(base) / source_path):
                if candidate.is_file():
                    return candidate.read_bytes()
    return None


def _sample(row: Mapping[str, Any], source: bytes | None) -> dict[str, Any]:
    source_path = str(row.get("source_path") or "")
    return {"text": row.get("original_text") or row.get("text", ""),
            "speaker_id": row.get("speaker_id", ""), "audio": row["audio"]["bytes"],
            "source": source, "source_suffix": Path(source_path).suffix or ".mp3"}


def _local_sources(folder: Path) -> list[str]:
    """Source folders named in the folder's dataset card that exist here (raw CV releases)."""
    from parla.hub.client import CARD_FILE, read_card_state

    card = folder / CARD_FILE
    state = read_card_state(card.read_text(encoding="utf-8")) if card.is_file() else None
    found = []
    for spec in (state[1].get("datasets") or []) if state else []:
        location = str(spec).split("=", 1)[-1]
        if Path(location).is_dir():
            found.append(location)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    from parla.cli import run_command

    parser = argparse.ArgumentParser(prog="python -m parla.report",
                                     description="(Re)build report.html of a prepared folder.")
    parser.add_argument("folder", help="a folder written by parla prepare")
    parser.add_argument("--sources", nargs="*", default=None, metavar="DIR",
                        help="folders holding the original clips (default: the local sources "
                             "named in the folder's dataset card)")
    parser.add_argument("--samples", type=int, default=SAMPLES_PER_DIALECT,
                        help="sample clips per dialect (default %(default)s)")
    args = parser.parse_args(argv)

    def command() -> int:
        folder = Path(args.folder)
        sources = args.sources if args.sources is not None else _local_sources(folder)
        data = read_prepared_folder(folder, sources, args.samples)
        path = write_report(folder, data["statistics"], data["clips"], data["rejects"],
                            data["samples"])
        print(f"wrote {path}")
        return 0

    return run_command("parla report", command)


if __name__ == "__main__":
    sys.exit(main())

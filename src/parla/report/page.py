"""report.html: a prepared corpus to look at and listen to, written beside the data.

`render_report` turns plain data (the statistics, one dict per kept clip, the rejects and the
sample files) into the page's HTML, with the figures of `report.figures`. Pure: the same inputs
give the same text. Writing it, with its sample clips under ``report/``, is `report.build`;
``python -m parla.report FOLDER`` (re)builds the report of a folder.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from parla.card.render import format_hours, total_rejected
from parla.report.figures import (
    AFTER_COLOR,
    BEFORE_COLOR,
    format_number,
    histogram_svg,
    reason_bars_svg,
    speaker_bars_svg,
)

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


# --- the figures (pure: numbers in, SVG text out) ---------------------------------------------


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


def _key_figures(output: Mapping[str, Any], rejected: int) -> str:
    return (f'<p class="key"><b>{output.get("rows", 0)}</b> clips · '
            f'<b>{output.get("speakers", 0)}</b> speakers · '
            f'<b>{format_hours(output.get("hours"))}</b>'
            f' hours · {output.get("samples_per_speaker", 0)} clips per speaker · mean '
            f'{output.get("mean_duration", 0)} s · {rejected} rejected</p>')


def _steps_table(steps: Sequence[Mapping[str, Any]]) -> str:
    if not steps:
        return ""
    rows = "".join(f"<tr><td>{html.escape(str(s.get('step', '')))}</td><td>{s.get('rows', '')}"
                   f"</td><td>{s.get('speakers', '')}</td>"
                   f"<td>{format_hours(s.get('hours'))}</td></tr>"
                   for s in steps)
    return ("<details><summary>Selection steps</summary><table><tr><th>step</th><th>rows</th>"
            f"<th>speakers</th><th>hours</th></tr>{rows}</table></details>")


def _dialect_figures(clips: Sequence[Mapping[str, Any]], rejected: Mapping[str, int]) -> str:
    figures = []
    for key, title, unit in _HISTOGRAMS:
        values = [clip.get(key) for clip in clips]
        missing = ("not scored in this run (prepare --dnsmos)" if key.startswith("dnsmos")
                   else "not measured in this run")
        figures.append(_figure(histogram_svg(title, unit, [(title, values, AFTER_COLOR)]),
                               f"{title}: {missing}"))
    speakers = Counter(str(clip.get("speaker_id")) for clip in clips)
    figures.append(_figure(speaker_bars_svg("Clips per speaker", list(speakers.values())),
                           "Clips per speaker: no clips"))
    for title, unit, before, after in _BEFORE_AFTER:
        svg = histogram_svg(f"{title}, before and after conditioning", unit,
                            [("before", [c.get(before) for c in clips], BEFORE_COLOR),
                             ("after", [c.get(after) for c in clips], AFTER_COLOR)])
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
                    f'<td>{format_hours(output.get("hours"))}</td>'
                    f'<td>{output.get("samples_per_speaker", 0)}</td>'
                    f'<td>{output.get("mean_duration", 0)}</td>'
                    f'<td>{"—" if snr is None else format_number(snr)}</td>'
                    f'<td>{sum((dialect.get("rejected") or {}).values())}</td></tr>')
    total = statistics.get("total", {})
    rows.append(f'<tr><th>total</th><th>{total.get("rows", 0)}</th>'
                f'<th>{total.get("speakers", 0)}</th><th>{format_hours(total.get("hours"))}</th>'
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
                             else total_rejected(statistics)),
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


# --- writing -----------------------------------------------------------------------------------


# --- reading a prepared folder (today's layout) ------------------------------------------------


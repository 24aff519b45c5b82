"""The report's figures as inline SVG, drawn from plain numbers (pure: numbers in, text out).

Histograms and bars need nothing more: no plotting dependency, the same bytes on every machine,
text a test can read, and a page that opens offline.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

BEFORE_COLOR, AFTER_COLOR, BAR_COLOR = "#9aa5b1", "#1f77b4", "#d9534f"


_WIDTH, _HEIGHT = 380, 210


_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 20, 26, 34


def format_number(value: float) -> str:
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
             f'<text x="{_LEFT - 4}" y="{_TOP + 4}" text-anchor="end">'
             f'{format_number(y_high)}</text>',
             f'<text x="{_LEFT - 4}" y="{base}" text-anchor="end">0</text>',
             f'<text x="12" y="{_TOP + plot_h / 2}" text-anchor="middle" '
             f'transform="rotate(-90 12 {_TOP + plot_h / 2})">{html.escape(y_label)}</text>',
             f'<text x="{_LEFT + plot_w / 2}" y="{_HEIGHT - 4}" text-anchor="middle">'
             f'{html.escape(unit)}</text>']
    for tick in np.linspace(x_low, x_high, 5):
        x = _LEFT + (tick - x_low) / (x_high - x_low) * plot_w
        parts.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" '
                     f'class="axis"/><text x="{x:.1f}" y="{base + 15}" '
                     f'text-anchor="middle">{format_number(float(tick))}</text>')
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
            mean = f", mean {format_number(float(values.mean()))}" if values.size else ""
            body.append(f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{colour}"/>'
                        f'<text x="{x + 14}" y="{y + 1}">{html.escape(label)}{mean}</text>')
    label = (f"{title}: {pooled.size} values from {format_number(low)} to "
             f"{format_number(high)} {unit}")
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
                             [(title, counts, AFTER_COLOR)], bins=bins, counted="speakers")
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
                    f'fill="{AFTER_COLOR}"/>')
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
                    f'width="{max(width, 1):.1f}" height="{row_h - 5}" fill="{BAR_COLOR}"/>'
                    f'<text x="{label_w + width + 4:.1f}" y="{y + 12}">{n}</text>')
    label = f"{title}: " + ", ".join(f"{reason} {n}" for reason, n in items)
    svg = _svg(title, body, label)
    return svg.replace(f'viewBox="0 0 {_WIDTH} {_HEIGHT}"', f'viewBox="0 0 {_WIDTH} {height}"', 1)

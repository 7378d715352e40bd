"""Charts as inline SVG, drawn on the server: bars (stacked) and lines over time buckets,
with a y axis of round numbers and a few x labels. Pure: data in, markup out.

Safe under the console's CSP (`default-src 'self'`): no `style` attribute or element and no
script; colours come from classes (`s0`, `s1`, ... styled in console.css, block "stats"),
geometry from presentation attributes. Every text is escaped. The SVG scales with its
`viewBox`, so one drawing serves a laptop and a phone; the numbers are also in a table
beside each chart (the SVG itself is one labelled image).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from markupsafe import Markup, escape

WIDTH: Final = 400
HEIGHT: Final = 220
LEFT, RIGHT, TOP, BOTTOM = 64, 22, 12, 26
FONT: Final = 13
MAX_X_LABELS: Final = 6
TICKS: Final = 4  # intervals on the y axis

Format = Callable[[float], str]


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]
    css: str  # the colour class: s0, s1, ...


def compact(value: float) -> str:
    """1234 -> 1.2k, 5_000_000 -> 5M, 0.5 -> 0.5."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".removesuffix(".0") + suffix
    return f"{value:.1f}".removesuffix(".0")


def duration(ms: float) -> str:
    """Milliseconds as the page shows them: 850 ms, 1.2 s, 3.5 min."""
    if ms >= 60_000:
        return f"{ms / 60_000:.1f}".removesuffix(".0") + " min"
    if ms >= 1_000:
        return f"{ms / 1_000:.1f}".removesuffix(".0") + " s"
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f}".removesuffix(".0") + " ms"


def nice_step(span: float) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) dividing `span` into about
    TICKS intervals."""
    raw = span / TICKS if span > 0 else 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * power:
            return factor * power
    return 10.0 * power  # unreachable: raw <= 10 * power


def bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    fmt: Format = compact,
) -> Markup:
    """Stacked bars, one per label; None counts as 0."""
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    frame = _Frame(len(labels), max(totals, default=0))
    parts = frame.axes(labels, fmt)
    slot = frame.slot
    width = max(slot * 0.7, 1.0)
    for i, label in enumerate(labels):
        base = 0.0
        for s in series:
            value = s.values[i] or 0
            if value <= 0:
                continue
            y_top, y_base = frame.y(base + value), frame.y(base)
            parts.append(
                f'<rect class="bar {_cls(s.css)}" x="{frame.x(i) - width / 2:.1f}"'
                f' y="{y_top:.1f}" width="{width:.1f}" height="{max(y_base - y_top, 0.5):.1f}">'
                f"<title>{escape(label)}: {escape(s.name)} {escape(fmt(value))}</title></rect>"
            )
            base += value
    return _svg(chart_id, title, parts)


def line_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    fmt: Format = compact,
) -> Markup:
    """One line per series; a None breaks the line (no data in that bucket)."""
    values = [v for s in series for v in s.values if v is not None]
    frame = _Frame(len(labels), max(values, default=0))
    parts = frame.axes(labels, fmt)
    for s in series:
        runs: list[list[str]] = [[]]
        for i, value in enumerate(s.values):
            if value is None:
                runs.append([])
                continue
            x, y = frame.x(i), frame.y(value)
            runs[-1].append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle class="dot {_cls(s.css)}" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
                f"<title>{escape(labels[i])}: {escape(s.name)} {escape(fmt(value))}</title>"
                "</circle>"
            )
        for run in runs:
            if len(run) > 1:
                parts.append(
                    f'<polyline class="line {_cls(s.css)}" fill="none" stroke-width="2"'
                    f' points="{" ".join(run)}"/>'
                )
    return _svg(chart_id, title, parts)


def legend(series: Sequence[Series]) -> Markup:
    """The series' names beside their colours (HTML, under the chart)."""
    items = "".join(
        f'<li><span class="swatch {_cls(s.css)}" aria-hidden="true"></span>{escape(s.name)}</li>'
        for s in series
    )
    return Markup(f'<ul class="legend">{items}</ul>')


class _Frame:
    """Where a bucket and a value land in the drawing."""

    def __init__(self, count: int, top_value: float) -> None:
        self.count = max(count, 1)
        self.step = nice_step(top_value)
        self.top = self.step * max(math.ceil(top_value / self.step), 1)
        self.plot_w = WIDTH - LEFT - RIGHT
        self.plot_h = HEIGHT - TOP - BOTTOM
        self.slot = self.plot_w / self.count

    def x(self, i: int) -> float:
        return LEFT + self.slot * (i + 0.5)

    def y(self, value: float) -> float:
        return TOP + self.plot_h * (1 - value / self.top)

    def axes(self, labels: Sequence[str], fmt: Format) -> list[str]:
        parts = []
        for k in range(round(self.top / self.step) + 1):  # at multiples of the round step
            value = self.step * k
            y = self.y(value)
            parts.append(
                f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                f'<text class="tick" x="{LEFT - 6}" y="{y + FONT / 3:.1f}" text-anchor="end">'
                f"{escape(fmt(value))}</text>"
            )
        every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
        for i in range(0, len(labels), every):
            parts.append(
                f'<text class="tick" x="{self.x(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{escape(labels[i])}</text>"
            )
        base = self.y(0)
        parts.append(
            f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base:.1f}" y2="{base:.1f}"/>'
        )
        return parts


def _cls(css: str) -> str:
    """A colour class as given by the page (letters, digits, dashes only)."""
    return "".join(c for c in css if c.isalnum() or c == "-")


def _svg(chart_id: str, title: str, parts: list[str]) -> Markup:
    ident = _cls(chart_id)
    return Markup(
        f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-labelledby="{ident}-title" font-size="{FONT}"'
        ' xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{ident}-title">{escape(title)}</title>{"".join(parts)}</svg>'
    )

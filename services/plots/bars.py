"""The horizontal bar chart (e.g. steps to target), where a missing value is "not reached"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.plots.svg import (
    _f,
    _finite,
    _open_svg,
    _Scale,
    _short,
    color,
    esc,
    nice_ticks,
    tick_text,
)


@dataclass(frozen=True)
class Bar:
    """One bar; ``value=None`` is drawn as "not reached". ``note`` follows the value."""

    label: str
    value: float | None
    note: str = ""
    color: str | None = None


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    value_label: str,
    value_format: Callable[[float], str] = tick_text,
    width: int = 900,
) -> str:
    """Horizontal bars from zero, one row per entry; a missing value reads "not reached"."""
    row = 26
    height = 70 + row * max(len(bars), 1)
    box = (170.0, 34.0, float(width - 190), float(height - 40))
    left, top, right, bottom = box
    parts = _open_svg(width, height, title, "bar-chart")
    values = [b.value for b in bars if _finite(b.value) and b.value >= 0]
    hi = max(values) if values else 1.0
    ticks = nice_ticks(0.0, hi * 1.02 if hi > 0 else 1.0, 6)
    sx = _Scale(0.0, max(ticks[-1], hi) if ticks else 1.0, left, right)
    parts.append('<g class="grid" stroke="#e6e6e6">')
    for t in ticks:
        parts.append(f'<line x1="{_f(sx(t))}" y1="{top}" x2="{_f(sx(t))}" y2="{bottom}"/>')
    parts.append("</g>")
    parts.append('<g font-size="11" fill="#444">')
    for t in ticks:
        parts.append(
            f'<text x="{_f(sx(t))}" y="{bottom + 14}" text-anchor="middle">'
            f"{esc(tick_text(t))}</text>"
        )
    parts.append("</g>")
    parts.append(
        f'<text x="{_f((left + right) / 2)}" y="{bottom + 32}" font-size="12" '
        f'text-anchor="middle" fill="#333">{esc(value_label)}</text>'
    )
    for index, b in enumerate(bars):
        y = top + 6 + index * row
        mid = y + (row - 8) / 2 + 4
        parts.append(
            f'<text x="{left - 8}" y="{_f(mid)}" font-size="12" text-anchor="end" fill="#222">'
            f"<title>{esc(b.label)}</title>{esc(_short(b.label, 24))}</text>"
        )
        note = f" {b.note}" if b.note else ""
        if _finite(b.value) and b.value >= 0:
            end = sx(b.value)
            fill = b.color or color(index)
            parts.append(
                f'<rect class="bar" x="{left}" y="{_f(y)}" width="{_f(max(end - left, 1.0))}" '
                f'height="{row - 8}" fill="{esc(fill)}"><title>{esc(b.label)}: '
                f"{esc(value_format(b.value))}{esc(note)}</title></rect>"
            )
            parts.append(
                f'<text x="{_f(end + 6)}" y="{_f(mid)}" font-size="12" fill="#222">'
                f"{esc(value_format(b.value))}"
                f'<tspan fill="#777">{esc(note)}</tspan></text>'
            )
        else:
            parts.append(
                f'<text class="not-reached" x="{left + 6}" y="{_f(mid)}" font-size="12" '
                f'font-style="italic" fill="#888">not reached{esc(note)}</text>'
            )
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#999"/>')
    parts.append("</svg>")
    return "".join(parts)

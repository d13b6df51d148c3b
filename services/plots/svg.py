"""What every chart shares: escaping, the palette, scales and ticks, the SVG frame, axes
and legend."""

from __future__ import annotations

import html
import itertools
import math
from typing import Any, TypeGuard

# Tableau 10: distinct, readable on white; series beyond ten reuse them with dashes.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#7f7f7f",
)
MAX_POINTS = 1000
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"
_ids = itertools.count(1)


def esc(text: Any) -> str:
    """Text for HTML/SVG content and attribute values (quotes escaped too)."""
    return html.escape(str(text), quote=True)


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def dashed(index: int) -> bool:
    """Series 11-20 (and 31-40, ...) are drawn dashed, so colours that repeat stay apart."""
    return (index // len(PALETTE)) % 2 == 1


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- scales and ticks


class _Scale:
    def __init__(self, lo: float, hi: float, px_lo: float, px_hi: float, log: bool = False):
        self.log = log
        self.lo, self.hi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
        if self.hi <= self.lo:
            self.hi = self.lo + 1.0
        self.px_lo, self.px_hi = px_lo, px_hi

    def __call__(self, value: float) -> float:
        v = math.log10(value) if self.log else value
        pixel = self.px_lo + (v - self.lo) / (self.hi - self.lo) * (self.px_hi - self.px_lo)
        return min(max(pixel, -1e5), 1e5)  # far outside stays drawable (and clipped)


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if raw <= m * magnitude)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Decades in [lo, hi] (every k-th one when there are many; 2 and 5 too when few)."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = b - a
    multiples = (1.0, 2.0, 5.0) if decades <= 2 else (1.0,)
    every = max(1, math.ceil(decades / 8))
    ticks = [
        m * 10.0**k
        for k in range(a, b + 1)
        if (k - a) % every == 0
        for m in multiples
        if lo * (1 - 1e-9) <= m * 10.0**k <= hi * (1 + 1e-9)
    ]
    return ticks if len(ticks) >= 2 else [t for t in nice_ticks(lo, hi) if t > 0]


def tick_text(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        mantissa, exponent = f"{value:.1e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.6g}"


def _range(values: list[float], log: bool) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if log:
        if hi / lo < 1.0001:
            return lo / 3, hi * 3
        pad = (math.log10(hi) - math.log10(lo)) * 0.04
        return lo / 10**pad, hi * 10**pad
    if hi - lo < 1e-12 * max(abs(hi), 1.0):
        delta = abs(hi) * 0.1 or 1.0
        return lo - delta, hi + delta
    pad = (hi - lo) * 0.04
    return lo - pad, hi + pad


def _f(value: float) -> str:
    return f"{value:.1f}"


# ---------------------------------------------------------------- shared pieces


def _open_svg(width: int, height: int, title: str, css_class: str) -> list[str]:
    return [
        f'<svg class="chart {css_class}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{esc(title)}" style="{FONT}">',
        f"<title>{esc(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="8" y="20" font-size="15" font-weight="600" fill="#222">{esc(title)}</text>',
    ]


def _axes(
    parts: list[str],
    sx: _Scale,
    sy: _Scale,
    box: tuple[float, float, float, float],
    x_ticks: list[float],
    y_ticks: list[float],
    x_label: str,
    y_label: str,
    grid: bool = True,
) -> None:
    left, top, right, bottom = box
    if grid:
        parts.append('<g class="grid" stroke="#e6e6e6" stroke-width="1">')
        for t in x_ticks:
            parts.append(f'<line x1="{_f(sx(t))}" y1="{top}" x2="{_f(sx(t))}" y2="{bottom}"/>')
        for t in y_ticks:
            parts.append(f'<line x1="{left}" y1="{_f(sy(t))}" x2="{right}" y2="{_f(sy(t))}"/>')
        parts.append("</g>")
    else:  # tick marks only
        parts.append('<g stroke="#999">')
        for t in x_ticks:
            parts.append(
                f'<line x1="{_f(sx(t))}" y1="{bottom}" x2="{_f(sx(t))}" y2="{bottom + 4}"/>'
            )
        for t in y_ticks:
            parts.append(f'<line x1="{left - 4}" y1="{_f(sy(t))}" x2="{left}" y2="{_f(sy(t))}"/>')
        parts.append("</g>")
    parts.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        'fill="none" stroke="#999"/>'
    )
    parts.append('<g class="ticks" font-size="11" fill="#444">')
    for t in x_ticks:
        parts.append(
            f'<text x="{_f(sx(t))}" y="{bottom + 15}" text-anchor="middle">'
            f"{esc(tick_text(t))}</text>"
        )
    for t in y_ticks:
        parts.append(
            f'<text x="{left - 6}" y="{_f(sy(t) + 4)}" text-anchor="end">{esc(tick_text(t))}</text>'
        )
    parts.append("</g>")
    mid_x, mid_y = (left + right) / 2, (top + bottom) / 2
    parts.append(
        f'<text x="{_f(mid_x)}" y="{bottom + 34}" font-size="12" text-anchor="middle" '
        f'fill="#333">{esc(x_label)}</text>'
    )
    parts.append(
        f'<text x="14" y="{_f(mid_y)}" font-size="12" text-anchor="middle" fill="#333" '
        f'transform="rotate(-90 14 {_f(mid_y)})">{esc(y_label)}</text>'
    )


def _legend(parts: list[str], x: float, y: float, entries: list[tuple[str, str, bool]]) -> float:
    """Colour swatches with labels; returns the y below the last entry."""
    parts.append('<g class="legend" font-size="12" fill="#222">')
    for label, stroke, is_dashed in entries:
        dash = ' stroke-dasharray="5 3"' if is_dashed else ""
        parts.append(
            f'<line x1="{_f(x)}" y1="{_f(y - 4)}" x2="{_f(x + 22)}" y2="{_f(y - 4)}" '
            f'stroke="{esc(stroke)}" stroke-width="3"{dash}/>'
        )
        parts.append(
            f'<text x="{_f(x + 28)}" y="{_f(y)}"><title>{esc(label)}</title>'
            f"{esc(_short(label, 24))}</text>"
        )
        y += 18
    parts.append("</g>")
    return y


def _no_data(parts: list[str], box: tuple[float, float, float, float], text: str) -> None:
    left, top, right, bottom = box
    parts.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        'fill="#fafafa" stroke="#ccc"/>'
        f'<text x="{_f((left + right) / 2)}" y="{_f((top + bottom) / 2)}" font-size="13" '
        f'text-anchor="middle" fill="#777">{esc(text)}</text>'
    )

"""Small inline-SVG charts for the HTML report: no JavaScript, no network, no matplotlib.

    line_chart(series, title=..., x_label=..., y_label=..., log_y=False) -> str
    bar_chart(bars, title=..., value_label=...) -> str
    contour_chart(function, x_range, y_range, trajectories=..., minima=...) -> str

Each returns one ``<svg>`` element (a string) to place in an HTML page; HTML5 needs no
``xmlns`` on inline SVG, so none is written. All text (titles, axis labels, series labels,
which come from users) is escaped. Long series are downsampled per series to at most
``max_points`` points, keeping each bucket's minimum and maximum so that spikes survive.
Only numpy is used (for the contour grid), which the API already depends on.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

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
_Point = tuple[str, str]  # pixel coordinates as written


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


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Series:
    """One labelled line; ``lower``/``upper`` (same length as ``x``) draw a band around it."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    lower: Sequence[float | None] | None = None
    upper: Sequence[float | None] | None = None
    color: str | None = None
    dashed: bool = False


@dataclass(frozen=True)
class Bar:
    """One bar; ``value=None`` is drawn as "not reached". ``note`` follows the value."""

    label: str
    value: float | None
    note: str = ""
    color: str | None = None


@dataclass(frozen=True)
class Trajectory:
    """A path in the plane (a run's points), drawn with a start and an end marker."""

    label: str
    x: Sequence[float | None]
    y: Sequence[float | None]
    color: str | None = None


# ---------------------------------------------------------------- downsampling


def _buckets(n: int, max_points: int) -> list[range]:
    count = max(1, (max_points - 2) // 2)
    return [range(b * n // count, (b + 1) * n // count) for b in range(count)]


def downsample(
    x: Sequence[float], y: Sequence[float | None], max_points: int = MAX_POINTS
) -> tuple[list[float], list[float | None]]:
    """At most ``max_points`` points: the first, the last, and per bucket the minimum and
    the maximum of ``y`` (in their original order), so a single spike is always kept."""
    n = len(x)
    if n <= max_points:
        return list(x), list(y)
    keep = {0, n - 1}
    for bucket in _buckets(n, max_points):
        valid = [i for i in bucket if _finite(y[i])]
        if not valid:
            keep.add(bucket.start)  # keeps the gap (a missing value breaks the line)
            continue
        keep.add(min(valid, key=lambda i: y[i]))  # type: ignore[arg-type, return-value]
        keep.add(max(valid, key=lambda i: y[i]))  # type: ignore[arg-type, return-value]
    order = sorted(keep)
    return [x[i] for i in order], [y[i] for i in order]


def downsample_band(
    x: Sequence[float],
    lower: Sequence[float | None],
    upper: Sequence[float | None],
    max_points: int = MAX_POINTS,
) -> tuple[list[float], list[float | None], list[float | None]]:
    """A band with at most ``max_points`` points: per bucket the lowest ``lower`` and the
    highest ``upper``, at the bucket's first and last x (so the band never shrinks)."""
    n = len(x)
    if n <= max_points:
        return list(x), list(lower), list(upper)
    xs: list[float] = []
    los: list[float | None] = []
    his: list[float | None] = []
    for bucket in _buckets(n, max_points):
        if not bucket:
            continue
        lo = [v for v in (lower[i] for i in bucket) if _finite(v)]
        hi = [v for v in (upper[i] for i in bucket) if _finite(v)]
        low = min(lo) if lo else None
        high = max(hi) if hi else None
        for i in sorted({bucket.start, bucket.stop - 1}):
            xs.append(x[i])
            los.append(low)
            his.append(high)
    return xs, los, his


def _thin(n: int, max_points: int) -> list[int]:
    """Evenly spaced indices, first and last included (for paths, where min/max of one
    coordinate means nothing)."""
    if n <= max_points:
        return list(range(n))
    step = (n - 1) / (max_points - 1)
    return sorted({round(i * step) for i in range(max_points)} | {n - 1})


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


def _path(points: list[tuple[float | None, float | None]], sx: _Scale, sy: _Scale) -> str:
    """SVG path data; a missing point (None, non-finite, <= 0 on a log axis) breaks the line."""
    out: list[str] = []
    pen_down = False
    for px, py in points:
        ok = _finite(px) and _finite(py) and (not sy.log or py > 0)
        if not ok:
            pen_down = False
            continue
        out.append(f"{'L' if pen_down else 'M'}{_f(sx(px))} {_f(sy(py))}")  # type: ignore[arg-type]
        pen_down = True
    return "".join(out)


def _band_paths(
    xs: list[float], lo: list[float | None], hi: list[float | None], sx: _Scale, sy: _Scale
) -> list[str]:
    """Closed polygons, one per run of points where both bounds are drawable."""
    polygons: list[str] = []
    run: list[tuple[float, float, float]] = []

    def close() -> None:
        if len(run) >= 2:
            top = [f"{_f(sx(x))} {_f(sy(h))}" for x, _, h in run]
            bottom = [f"{_f(sx(x))} {_f(sy(low))}" for x, low, _ in reversed(run)]
            polygons.append("M" + " L".join(top + bottom) + "Z")
        run.clear()

    for x, low, high in zip(xs, lo, hi, strict=True):
        ok = _finite(x) and _finite(low) and _finite(high)
        if ok and sy.log and (low <= 0 or high <= 0):  # type: ignore[operator]
            ok = False
        if ok:
            run.append((x, low, high))  # type: ignore[arg-type]
        else:
            close()
    close()
    return polygons


def _no_data(parts: list[str], box: tuple[float, float, float, float], text: str) -> None:
    left, top, right, bottom = box
    parts.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        'fill="#fafafa" stroke="#ccc"/>'
        f'<text x="{_f((left + right) / 2)}" y="{_f((top + bottom) / 2)}" font-size="13" '
        f'text-anchor="middle" fill="#777">{esc(text)}</text>'
    )


# ---------------------------------------------------------------- line chart


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_y: bool = False,
    reference: tuple[float, str] | None = None,
    max_points: int = MAX_POINTS,
    width: int = 900,
    height: int = 380,
) -> str:
    """Labelled lines (optionally with bands), linear x, linear or log y, and a legend.

    On a log axis, values <= 0 are left out (the line breaks there). ``reference`` draws a
    dashed horizontal line at a value, with its text (e.g. the target).
    """
    prepared = []
    for index, s in enumerate(series):
        x, y = downsample(s.x, s.y, max_points)
        band = None
        if s.lower is not None and s.upper is not None:
            band = downsample_band(s.x, s.lower, s.upper, max_points)
        stroke = s.color or color(index)
        prepared.append((s, x, y, band, stroke))

    values: list[float] = []
    xs_all: list[float] = []
    for _, x, y, band, _stroke in prepared:
        for xv, yv in zip(x, y, strict=True):
            if _finite(xv) and _finite(yv) and (not log_y or yv > 0):
                values.append(yv)
                xs_all.append(xv)
        if band is not None:
            for bound in band[1:]:
                values.extend(v for v in bound if _finite(v) and (not log_y or v > 0))
    if reference is not None and _finite(reference[0]) and (not log_y or reference[0] > 0):
        values.append(reference[0])

    legend_rows = len(series) + 2
    height = max(height, 60 + 18 * legend_rows)
    box = (70.0, 34.0, float(width - 200), float(height - 50))
    left, top, right, bottom = box
    parts = _open_svg(width, height, title, "line-chart")
    if not xs_all:
        _no_data(parts, box, "no data")
        parts.append("</svg>")
        return "".join(parts)

    x_lo, x_hi = min(xs_all), max(xs_all)
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = _range(values, log_y)
    sx = _Scale(x_lo, x_hi, left, right)
    sy = _Scale(y_lo, y_hi, bottom, top, log=log_y)
    y_ticks = log_ticks(y_lo, y_hi) if log_y else nice_ticks(y_lo, y_hi)
    x_ticks = nice_ticks(x_lo, x_hi, 8)
    _axes(parts, sx, sy, box, x_ticks, y_ticks, x_label, y_label + (" (log)" if log_y else ""))

    clip = f"clip{next(_ids)}"
    parts.append(
        f'<clipPath id="{clip}"><rect x="{left}" y="{top}" width="{right - left}" '
        f'height="{bottom - top}"/></clipPath><g clip-path="url(#{clip})">'
    )
    for _s, _x, _y, band, stroke in prepared:
        if band is not None:
            for polygon in _band_paths(*band, sx, sy):
                parts.append(
                    f'<path class="band" d="{polygon}" fill="{esc(stroke)}" fill-opacity="0.18" '
                    'stroke="none"/>'
                )
    if reference is not None and _finite(reference[0]) and (not log_y or reference[0] > 0):
        ry = _f(sy(reference[0]))
        parts.append(
            f'<line x1="{left}" y1="{ry}" x2="{right}" y2="{ry}" stroke="#555" '
            'stroke-dasharray="6 4" stroke-width="1"/>'
        )
    for s, x, y, _band, stroke in prepared:
        d = _path(list(zip(x, y, strict=True)), sx, sy)
        dash = ' stroke-dasharray="6 3"' if s.dashed else ""
        if d:
            parts.append(
                f'<path class="series" d="{d}" fill="none" stroke="{esc(stroke)}" '
                f'stroke-width="1.7" stroke-linejoin="round"{dash}>'
                f"<title>{esc(s.label)}</title></path>"
            )
    parts.append("</g>")
    entries = [(s.label, st, s.dashed) for s, _, _, _, st in prepared]
    if reference is not None and _finite(reference[0]) and (not log_y or reference[0] > 0):
        entries.append((reference[1], "#555", True))  # the dashed line's text, in the legend
    _legend(parts, right + 16, top + 12, entries)
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------- bar chart


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


# ---------------------------------------------------------------- contour plot

# Shading of log f, low to high: pale cream to slate, so coloured paths stay visible.
_RAMP = ((255, 253, 240), (232, 240, 228), (205, 222, 226), (176, 197, 215), (150, 170, 200))


def _ramp(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(_RAMP) - 1)
    i = min(int(t), len(_RAMP) - 2)
    frac = t - i
    rgb = (round(a + (b - a) * frac) for a, b in zip(_RAMP[i], _RAMP[i + 1], strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _log_shade(z: np.ndarray) -> np.ndarray:
    """log10(f - min f + δ) on the grid, δ a small share of the range (NaN where f is not)."""
    finite = np.isfinite(z)
    if not finite.any():
        return np.full(z.shape, np.nan)
    lo, hi = float(z[finite].min()), float(z[finite].max())
    delta = max((hi - lo) * 1e-4, 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, np.log10(np.where(finite, z, lo) - lo + delta), np.nan)


def _iso_segments(
    grid: np.ndarray, level: float, xs: np.ndarray, ys: np.ndarray
) -> list[tuple[float, float, float, float]]:
    """Marching squares: the segments where ``grid`` (vertices, [iy, ix]) crosses ``level``."""
    above = grid > level
    v0, v1 = above[:-1, :-1], above[:-1, 1:]  # bottom-left, bottom-right
    v2, v3 = above[1:, 1:], above[1:, :-1]  # top-right, top-left
    case = v0 * 1 + v1 * 2 + v2 * 4 + v3 * 8
    valid = np.isfinite(grid[:-1, :-1]) & np.isfinite(grid[:-1, 1:])
    valid &= np.isfinite(grid[1:, 1:]) & np.isfinite(grid[1:, :-1])
    segments = []
    for iy, ix in zip(*np.nonzero(valid & (case != 0) & (case != 15)), strict=True):
        corners = (
            (xs[ix], ys[iy], grid[iy, ix]),
            (xs[ix + 1], ys[iy], grid[iy, ix + 1]),
            (xs[ix + 1], ys[iy + 1], grid[iy + 1, ix + 1]),
            (xs[ix], ys[iy + 1], grid[iy + 1, ix]),
        )
        points = {}
        for edge in range(4):
            (ax, ay, az), (bx, by, bz) = corners[edge], corners[(edge + 1) % 4]
            if (az > level) != (bz > level):
                t = (level - az) / (bz - az)
                points[edge] = (ax + t * (bx - ax), ay + t * (by - ay))
        c = int(case[iy, ix])
        pairs = {5: ((3, 0), (1, 2)), 10: ((0, 1), (2, 3))}.get(c, (tuple(points),))
        for pair in pairs:
            if len(pair) == 2:
                (x1, y1), (x2, y2) = points[pair[0]], points[pair[1]]
                segments.append((float(x1), float(y1), float(x2), float(y2)))
    return segments


def _chain(segments: list[tuple[_Point, _Point]]) -> list[list[_Point]]:
    """Join segments that share an end (as drawn, so rounding merges them) into polylines."""
    at: dict[_Point, list[int]] = {}
    for index, (a, b) in enumerate(segments):
        at.setdefault(a, []).append(index)
        at.setdefault(b, []).append(index)
    used = [False] * len(segments)

    def walk(line: list[_Point]) -> None:
        while True:
            nxt = next((i for i in at[line[-1]] if not used[i]), None)
            if nxt is None:
                return
            used[nxt] = True
            a, b = segments[nxt]
            line.append(b if a == line[-1] else a)

    lines = []
    for index, (a, b) in enumerate(segments):
        if used[index]:
            continue
        used[index] = True
        forward, backward = [a, b], [a]
        walk(forward)
        walk(backward)
        lines.append(backward[:0:-1] + forward)
    return lines


def contour_chart(
    function: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    *,
    title: str,
    trajectories: Sequence[Trajectory] = (),
    minima: Sequence[tuple[float, float]] = (),
    levels: int = 16,
    resolution: tuple[int, int] = (120, 90),
    max_points: int = MAX_POINTS,
    width: int = 900,
    height: int = 560,
    shading_note: str = "shading: log10(f - min f + δ)",
) -> str:
    """A 2-D function's contour plot (cells shaded by log f, iso-lines by marching squares)
    with paths on top: each a polyline from an open circle (start) to a filled one (end).

    ``function`` maps numpy arrays X, Y (same shape) to f(X, Y).
    """
    nx, ny = resolution
    xs = np.linspace(x_range[0], x_range[1], nx + 1)
    ys = np.linspace(y_range[0], y_range[1], ny + 1)
    with np.errstate(all="ignore"):
        z = np.asarray(function(*np.meshgrid(xs, ys)), dtype=float)  # [iy, ix]
    shade = _log_shade(z)
    finite = np.isfinite(shade)
    s_lo = float(shade[finite].min()) if finite.any() else 0.0
    s_hi = float(shade[finite].max()) if finite.any() else 1.0
    if s_hi <= s_lo:
        s_hi = s_lo + 1.0
    thresholds = [s_lo + (s_hi - s_lo) * k / levels for k in range(1, levels)]

    box = (70.0, 34.0, float(width - 210), float(height - 50))
    left, top, right, bottom = box
    sx = _Scale(x_range[0], x_range[1], left, right)
    sy = _Scale(y_range[0], y_range[1], bottom, top)
    parts = _open_svg(width, height, title, "contour-chart")
    clip = f"clip{next(_ids)}"
    parts.append(
        f'<clipPath id="{clip}"><rect x="{left}" y="{top}" width="{right - left}" '
        f'height="{bottom - top}"/></clipPath>'
    )

    # Filled cells: the band of each cell's mean; runs of equal bands in a row become one
    # rectangle, and all rectangles of one band one path (small output).
    with np.errstate(invalid="ignore"):
        cell = (shade[:-1, :-1] + shade[:-1, 1:] + shade[1:, 1:] + shade[1:, :-1]) / 4
        band = np.floor((cell - s_lo) / (s_hi - s_lo) * levels).clip(0, levels - 1)
    band = np.where(np.isfinite(band), band, -1).astype(int)
    rects: dict[int, list[str]] = {}
    for iy in range(ny):
        y_top, y_bottom = sy(ys[iy + 1]), sy(ys[iy])
        ix = 0
        while ix < nx:
            value, start = int(band[iy, ix]), ix
            while ix < nx and band[iy, ix] == value:
                ix += 1
            if value >= 0:
                x0, x1 = sx(xs[start]), sx(xs[ix])
                rects.setdefault(value, []).append(
                    f"M{_f(x0)} {_f(y_top)}h{_f(x1 - x0 + 0.5)}v{_f(y_bottom - y_top + 0.5)}"
                    f"h{_f(x0 - x1 - 0.5)}z"
                )
    parts.append('<g class="contour-fill" shape-rendering="crispEdges">')
    for value, pieces in sorted(rects.items()):
        parts.append(f'<path d="{"".join(pieces)}" fill="{_ramp((value + 0.5) / levels)}"/>')
    parts.append("</g>")

    parts.append('<g class="contour" fill="none" stroke="#2f3d55" stroke-opacity="0.3">')
    for level in thresholds:
        lines = _chain(
            [
                ((_f(sx(a)), _f(sy(b))), (_f(sx(c)), _f(sy(e))))
                for a, b, c, e in _iso_segments(shade, level, xs, ys)
            ]
        )
        d = "".join("M" + "L".join(f"{px} {py}" for px, py in line) for line in lines)
        if d:
            parts.append(f'<path d="{d}" stroke-width="0.8"/>')
    parts.append("</g>")

    x_ticks, y_ticks = nice_ticks(*x_range, 8), nice_ticks(*y_range, 6)
    _axes(parts, sx, sy, box, x_ticks, y_ticks, "x", "y", grid=False)

    parts.append(f'<g clip-path="url(#{clip})">')
    legend: dict[str, tuple[str, bool]] = {}
    for index, path in enumerate(trajectories):
        stroke = path.color or color(index)
        legend.setdefault(path.label, (stroke, False))
        pts = [
            (px, py) for px, py in zip(path.x, path.y, strict=True) if _finite(px) and _finite(py)
        ]
        if not pts:
            continue
        keep = _thin(len(pts), max_points)
        coords = " ".join(f"{_f(sx(pts[i][0]))},{_f(sy(pts[i][1]))}" for i in keep)
        parts.append(
            f'<polyline class="trajectory" data-label="{esc(path.label)}" points="{coords}" '
            f'fill="none" stroke="{esc(stroke)}" stroke-width="2.2" stroke-opacity="0.9" '
            f'stroke-linejoin="round"><title>{esc(path.label)}</title></polyline>'
        )
        (x0, y0), (x1, y1) = pts[0], pts[-1]
        parts.append(
            f'<circle class="start" cx="{_f(sx(x0))}" cy="{_f(sy(y0))}" r="4.5" fill="#fff" '
            f'stroke="{esc(stroke)}" stroke-width="2"/>'
            f'<circle class="end" cx="{_f(sx(x1))}" cy="{_f(sy(y1))}" r="4" '
            f'fill="{esc(stroke)}" stroke="#fff" stroke-width="1"/>'
        )
    for mx, my in minima:
        cx, cy = sx(mx), sy(my)
        star = " ".join(
            f"{_f(cx + r * math.sin(k * math.pi / 5))},{_f(cy - r * math.cos(k * math.pi / 5))}"
            for k in range(10)
            for r in ((7.0 if k % 2 == 0 else 3.0),)
        )
        parts.append(
            f'<polygon class="minimum" points="{star}" fill="#111" stroke="#fff" '
            f'stroke-width="0.8"><title>minimum ({mx:g}, {my:g})</title></polygon>'
        )
    parts.append("</g>")

    y = _legend(parts, right + 16, top + 12, [(k, c, d) for k, (c, d) in legend.items()])
    parts.append(
        f'<g font-size="11" fill="#555"><circle cx="{_f(right + 20)}" cy="{_f(y + 4)}" r="4" '
        f'fill="#fff" stroke="#555" stroke-width="2"/><text x="{_f(right + 30)}" '
        f'y="{_f(y + 8)}">start</text><circle cx="{_f(right + 80)}" cy="{_f(y + 4)}" r="4" '
        f'fill="#555"/><text x="{_f(right + 90)}" y="{_f(y + 8)}">end</text>'
        f'<text x="{_f(right + 16)}" y="{_f(y + 28)}">★ minimum</text>'
        f'<text x="{_f(right + 16)}" y="{_f(y + 46)}">{esc(shading_note)}</text></g>'
    )
    parts.append("</svg>")
    return "".join(parts)

"""The contour plot of a 2-D function (shaded cells, marching-squares iso-lines) with
trajectories and minima on top."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.plots.svg import (
    MAX_POINTS,
    _axes,
    _f,
    _finite,
    _ids,
    _legend,
    _open_svg,
    _Scale,
    color,
    esc,
    nice_ticks,
)

_Point = tuple[str, str]  # pixel coordinates as written


@dataclass(frozen=True)
class Trajectory:
    """A path in the plane (a run's points), drawn with a start and an end marker."""

    label: str
    x: Sequence[float | None]
    y: Sequence[float | None]
    color: str | None = None


def _thin(n: int, max_points: int) -> list[int]:
    """Evenly spaced indices, first and last included (for paths, where min/max of one
    coordinate means nothing)."""
    if n <= max_points:
        return list(range(n))
    step = (n - 1) / (max_points - 1)
    return sorted({round(i * step) for i in range(max_points)} | {n - 1})


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

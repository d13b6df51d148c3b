"""The line chart (with bands and a reference line) and the downsampling of its series."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.plots.svg import (
    MAX_POINTS,
    _axes,
    _f,
    _finite,
    _ids,
    _legend,
    _no_data,
    _open_svg,
    _range,
    _Scale,
    color,
    esc,
    log_ticks,
    nice_ticks,
)


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

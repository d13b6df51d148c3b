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

from services.plots.bars import Bar, bar_chart
from services.plots.contour import Trajectory, contour_chart
from services.plots.lines import Series, downsample, downsample_band, line_chart
from services.plots.svg import (
    FONT,
    MAX_POINTS,
    PALETTE,
    color,
    dashed,
    esc,
    log_ticks,
    nice_ticks,
    tick_text,
)

__all__ = [
    "FONT",
    "MAX_POINTS",
    "PALETTE",
    "Bar",
    "Series",
    "Trajectory",
    "bar_chart",
    "color",
    "contour_chart",
    "dashed",
    "downsample",
    "downsample_band",
    "esc",
    "line_chart",
    "log_ticks",
    "nice_ticks",
    "tick_text",
]

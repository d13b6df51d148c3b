"""The HTML report of one job: one self-contained page (inline CSS, the chart library and
the chart module inlined, the chart data embedded as JSON; no network reference), served by
``GET /v1/jobs/{id}/report`` (with a CSP allowing exactly its two inline scripts) and written
by ``optbench report``.

    from services.report import render_report
    html = render_report(job_id)                      # job_id: UUID or its string
    Path("report.html").write_text(html, encoding="utf-8")

``render_report(job_id, *, smoothing=0.9, max_points=1000) -> str`` raises
``services.errors.NotFound`` for an unknown job. It reads the job, its runs, its step and
epoch series and its summary (the stored one once the job finished, recomputed otherwise, so
a running job gets a partial report) in one transaction, and shows:

- the summary table (every column the summary has; ``stats`` as mean ± std, ``paired`` and
  unknown fields as JSON), the target, the status (and the error of a failed job);
- the charts, drawn in the browser by the web page's own chart module
  (services/web/js/charts.js, on the vendored uPlot) from the same data as the page's
  ``GET /v1/jobs/{id}/charts`` (chart_data.py): training loss per step (smoothed per step
  with a debiased exponential moving average, ``smoothing`` the slider's start, the
  unsmoothed curve faint behind), training loss and validation accuracy (R² for regression)
  per epoch, seeds as mean with a min-max band or each run, steps-to-target and
  time-to-target bars; landscapes: the function's contour levels (traced on the server by
  contourpy) with every run's trajectory, the distance to the nearest minimum per epoch and
  f per step. Every chart: values on hover, drag to zoom, x axis step / epoch / training
  seconds, log or linear y, PNG and CSV downloads. Canvas charts print as drawn;
- the runs, the spec (pretty JSON) and the environment: the job's device, the optbench
  version, and the summary's ``environment`` (e.g. the worker's torch version) when a
  worker recorded one.

The API process must not import torch, so the six landscape functions are re-implemented
in numpy (``LANDSCAPES``, in landscapes.py); a unit test keeps them equal to
workers/engine/landscapes.py.
"""

from __future__ import annotations

import uuid

from services.report.assets import csp
from services.report.chart_data import MAX_POINTS, chart_data
from services.report.data import ReportData, RunInfo, load
from services.report.landscapes import LANDSCAPES, LandscapeView
from services.report.page import DEFAULT_SMOOTHING, build_page

__all__ = [
    "DEFAULT_SMOOTHING",
    "LANDSCAPES",
    "MAX_POINTS",
    "LandscapeView",
    "ReportData",
    "RunInfo",
    "build_page",
    "chart_data",
    "csp",
    "load",
    "render_report",
]


def render_report(
    job_id: uuid.UUID | str,
    *,
    smoothing: float = DEFAULT_SMOOTHING,
    max_points: int = MAX_POINTS,
) -> str:
    """The job's report: one self-contained HTML page (see the module docstring)."""
    return build_page(load(job_id), smoothing=smoothing, max_points=max_points)

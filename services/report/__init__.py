"""The HTML report of one job: one self-contained page (inline CSS and SVG, no script, no
network reference), served by ``GET /v1/jobs/{id}/report`` and written by ``optbench report``.

    from services.report import render_report
    html = render_report(job_id)                      # job_id: UUID or its string
    Path("report.html").write_text(html, encoding="utf-8")

``render_report(job_id, *, smoothing=0.9, max_points=1000) -> str`` raises
``services.errors.NotFound`` for an unknown job. It reads the job, its runs, its step and
epoch series and its summary (the stored one once the job finished, recomputed otherwise, so
a running job gets a partial report) in one transaction, and shows:

- the summary table (every column the summary has; ``stats`` as mean ± std, ``paired`` and
  unknown fields as JSON), the target, the status (and the error of a failed job);
- training loss per step: log scale when every value is positive, smoothed per run with a
  debiased exponential moving average (``smoothing``, stated on the page; landscapes are
  exact function values and stay unsmoothed), the line the mean over seeds and the band
  their min-max;
- validation accuracy (R² for regression) per epoch, mean over seeds with a min-max band;
- steps-to-target and time-to-target bars (median over the seeds that reached it, the
  share that did; "not reached" otherwise);
- landscapes: every run's trajectory over the function's contour plot (the lecture's
  picture), and the distance to the nearest minimum per step;
- the runs, the spec (pretty JSON) and the environment: the job's device, the optbench
  version, and the summary's ``environment`` (e.g. the worker's torch version) when a
  worker recorded one.

The API process must not import torch, so the six landscape functions are re-implemented
in numpy (``LANDSCAPES``, in landscapes.py); a unit test keeps them equal to
workers/engine/landscapes.py.
"""

from __future__ import annotations

import uuid

from services.report.data import ReportData, RunInfo, load
from services.report.landscapes import LANDSCAPES, LandscapeView
from services.report.page import DEFAULT_SMOOTHING, MAX_POINTS, build_page
from services.report.series import OverSeeds, ema, over_seeds

__all__ = [
    "DEFAULT_SMOOTHING",
    "LANDSCAPES",
    "MAX_POINTS",
    "LandscapeView",
    "OverSeeds",
    "ReportData",
    "RunInfo",
    "build_page",
    "ema",
    "load",
    "over_seeds",
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

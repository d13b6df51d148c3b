"""GET /v1/jobs/{id}/report: the job's self-contained HTML report (services/report/)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from services import jobs
from services.api.security import Owner
from services.report import DEFAULT_SMOOTHING, render_report

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# The page needs nothing from anywhere: no script, no fetch, inline styles and SVG only.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'"


@router.get(
    "/{job_id}/report",
    operation_id="getReport",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {}}, "description": "the report page"},
        404: {"description": "unknown job"},
    },
)
def get_report(
    job_id: uuid.UUID,
    owner: Owner,
    smoothing: Annotated[
        float, Query(ge=0.0, lt=1.0, description="EMA smoothing of the per-step loss")
    ] = DEFAULT_SMOOTHING,
) -> HTMLResponse:
    """A self-contained HTML page: loss per step, validation accuracy per epoch, steps and
    time to target, the summary table, spec and environment; for 2-D landscapes the
    trajectories over the function's contour plot. Works for running jobs (partial)."""
    jobs.check_owned(job_id, owner=owner)
    html = render_report(job_id, smoothing=smoothing)
    return HTMLResponse(html, headers={"Content-Security-Policy": _CSP})

"""GET /v1/jobs/{id}/report: the job's self-contained HTML report, and GET
/v1/jobs/{id}/charts: the data its charts and the web page's draw (services/report/)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from services import jobs
from services.api.chart_schemas import ChartDataOut
from services.api.security import Owner
from services.report import DEFAULT_SMOOTHING, MAX_POINTS, chart_data, csp, load, render_report

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


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
    """A self-contained HTML page: the summary table, the charts (loss per step and per
    epoch, validation accuracy per epoch, steps and time to target; for 2-D landscapes the
    trajectories over the function's contour), runs, spec and environment. Works for
    running jobs (partial). Its only scripts are inline (the CSP allows exactly those)."""
    jobs.check_owned(job_id, owner=owner)
    html = render_report(job_id, smoothing=smoothing)
    return HTMLResponse(html, headers={"Content-Security-Policy": csp()})


@router.get(
    "/{job_id}/charts",
    operation_id="getChartData",
    response_model=ChartDataOut,
    responses={404: {"description": "unknown job"}},
)
def get_chart_data(
    job_id: uuid.UUID,
    owner: Owner,
    smoothing: Annotated[
        float, Query(ge=0.0, lt=1.0, description="the smoothing the charts start with")
    ] = DEFAULT_SMOOTHING,
    max_points: Annotated[
        int, Query(ge=10, le=5000, description="step points per run at most (bucket means)")
    ] = MAX_POINTS,
) -> dict[str, Any]:
    """What the job page's and the report's charts draw (one shape: see
    services/report/chart_data.py): per run its step series (bucket means past
    ``max_points``) and epoch series, the labels, the target, the to-target rows and, for
    landscapes, the contour levels and minima."""
    jobs.check_owned(job_id, owner=owner)
    return chart_data(load(job_id), smoothing=smoothing, max_points=max_points)

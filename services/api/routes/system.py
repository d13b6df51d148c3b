"""Catalog (needs a caller, like every /v1 route), health, readiness and Prometheus.

/metrics holds no one's data: its labels never name an owner or a key, and the job counts
(``optbench_jobs{status}``) are totals over every owner, never one per owner. It is public
unless ``OPTBENCH_METRICS_TOKEN`` is set; then AuthMiddleware (services/api/security.py)
asks for that bearer token before this route runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from services.api.errors import problems
from services.api.schemas import CatalogOut, HealthOut, ReadinessOut
from services.api.security import AUTHENTICATED
from services.catalog import catalog_with_plugins
from services.db.session import unit_of_work
from services.settings import get_settings

router = APIRouter()


@router.get(
    "/v1/catalog",
    operation_id="getCatalog",
    response_model=CatalogOut,
    tags=["catalog"],
    dependencies=AUTHENTICATED,
)
def get_catalog() -> dict[str, Any]:
    """Data sets, models and optimizers with their parameters, defaults and bounds; the
    optimizers of installed packages that live workers can train."""
    return catalog_with_plugins(get_settings().heartbeat_timeout)


@router.get(
    "/metrics",
    operation_id="getPrometheusMetrics",
    tags=["system"],
    response_class=Response,
    # Not JSON: the Prometheus text format, described so a generated client reads it as text.
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **problems(401, 429),
    },
)
def prometheus_metrics() -> Response:
    """Prometheus exposition of this API process (workers serve their own). With
    OPTBENCH_METRICS_TOKEN set: 401 without `Authorization: Bearer <that token>`."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", operation_id="getHealth", tags=["system"], response_model=HealthOut)
def healthz() -> HealthOut:
    """Liveness: the process answers."""
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    operation_id="getReadiness",
    tags=["system"],
    response_model=ReadinessOut,
    responses=problems(503),
)
def readyz() -> ReadinessOut:
    """Readiness: the database answers (503 problem+json otherwise)."""
    with unit_of_work() as session:
        session.execute(text("SELECT 1"))
    return ReadinessOut(status="ready")

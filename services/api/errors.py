"""Errors as RFC 9457 problem+json, registered once on the base classes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from services.errors import OptbenchError, Unavailable
from services.spec import field_errors
from services.telemetry import JOBS_REJECTED

PROBLEM = "application/problem+json"


def problem(
    status: int,
    title: str,
    detail: str,
    code: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """An RFC 9457 problem+json response; ``extra`` members go into the body."""
    body = {
        "type": f"https://optbench.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


async def _domain_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, OptbenchError)
    return problem(
        error.status, error.title, error.detail, error.code, headers=error.headers, **error.extra
    )


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = field_errors(error.errors())
    if request.method == "POST" and request.url.path.rstrip("/") == "/v1/jobs":
        JOBS_REJECTED.labels("invalid_spec").inc()
    return problem(
        422,
        "Invalid request",
        "; ".join(map(str, errors)),
        "invalid-spec",
        errors=[{"field": e.field, "message": e.message} for e in errors],
    )


async def _database_down(request: Request, error: Exception) -> JSONResponse:
    unavailable = Unavailable("the database cannot be reached; retry shortly")
    return await _domain_error(request, unavailable)


def install(app: FastAPI) -> None:
    app.add_exception_handler(OptbenchError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OperationalError, _database_down)

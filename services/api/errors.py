"""Errors as RFC 9457 problem+json, registered once on the base classes."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.errors import OptbenchError, Unavailable
from services.settings import get_settings
from services.spec import field_errors
from services.telemetry import JOBS_REJECTED

PROBLEM = "application/problem+json"
log = logging.getLogger(__name__)

# What the database's absence looks like: no connection (refused, reset, timed out), a
# connection lost mid-request, no free connection in the pool before its timeout.
DATABASE_DOWN: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
)


def database_down(error: BaseException) -> bool:
    return isinstance(error, DATABASE_DOWN) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


def database_unavailable(error: BaseException) -> Unavailable:
    """The 503 for a database that cannot be reached: its detail names no host, user or
    password, and Retry-After is OPTBENCH_RETRY_AFTER_SECONDS. The cause is logged by its
    type only (a driver's message may carry the address)."""
    cause = getattr(error, "orig", None) or error
    log.warning("database unreachable (%s); answering 503", type(cause).__name__)
    unavailable = Unavailable("the database cannot be reached; retry shortly")
    unavailable.headers["Retry-After"] = str(get_settings().retry_after_seconds)
    return unavailable


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
    if not database_down(error):  # another database error is a bug: a 500, as before
        raise error
    return await _domain_error(request, database_unavailable(error))


def install(app: FastAPI) -> None:
    app.add_exception_handler(OptbenchError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for kind in (*DATABASE_DOWN, DBAPIError):
        app.add_exception_handler(kind, _database_down)

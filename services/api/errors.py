"""Errors as RFC 9457 problem+json, registered once on the base classes, and documented as
such in the OpenAPI schema (``document_problems``).

Bad input is never a 5xx: besides the spec's validation, query and path parameters holding a
control character are a 422 naming them (``refuse_control_characters_in_parameters``, every
route's dependency), and a value the database refuses as data (SQLSTATE class 22: NUL in
text, a number out of range) is a 422 too, should one get past validation. What is logged
names the error's class and the request id (services/api/request_context.py), never the
values: a database error's message holds the SQL's parameters."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from services.api.request_context import current_request_id, error_classes
from services.errors import OptbenchError, Unavailable
from services.settings import get_settings
from services.spec import field_errors
from services.spec.text import control_character_error
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
    log.warning(
        "database unreachable (%s; request %s); answering 503",
        type(cause).__name__,
        current_request_id(),
    )
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
    if database_down(error):
        return await _domain_error(request, database_unavailable(error))
    if isinstance(error, DataError):  # the value's fault (class 22), which validation missed
        log.warning(
            "the database refused a value (%s; request %s); answering 422",
            error_classes(error),
            current_request_id(),
        )
        return problem(
            422,
            "Invalid request",
            "a value in the request cannot be stored: remove control characters from its "
            "text and keep its numbers within the documented ranges",
            "invalid-spec",
        )
    raise error  # another database error is a bug: a 500, logged by request_context


def refuse_control_characters_in_parameters(request: Request) -> None:
    """Every route's dependency: a query or path parameter holding a control character is a
    422 naming it (the spec's and the form's fields are checked where they are parsed)."""
    problems = [
        {"loc": (where, name), "msg": message, "type": "value_error", "input": value}
        for where, items in (
            ("query", request.query_params.multi_items()),
            ("path", list(request.path_params.items())),
        )
        for name, value in items
        if (message := control_character_error(str(value))) is not None
    ]
    if problems:
        raise RequestValidationError(problems)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    """Starlette's and FastAPI's own errors as problems too: a body that cannot be parsed
    (400), a path no route serves (404), a method it does not take (405, with Allow)."""
    assert isinstance(error, HTTPException)
    phrase = HTTPStatus(error.status_code).phrase
    return problem(
        error.status_code,
        phrase,
        str(error.detail),
        phrase.lower().replace(" ", "-"),
        headers=dict(error.headers or {}),
    )


class Problem(BaseModel):
    """An error: RFC 9457 problem details, sent as ``application/problem+json``. Where they
    apply, further members say what to change: ``errors`` (each field and its message),
    ``limit`` (the setting, its maximum, what was asked for), ``retry_after_seconds``."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


# What each error status means here, for the operations that document it.
PROBLEMS = {
    400: "the request body cannot be parsed",
    401: "no API key, or an unknown or revoked one (WWW-Authenticate: Bearer)",
    404: "no such job or data set (or another owner's: the same answer)",
    409: "the job's state does not allow it",
    413: "the request body is over its size limit",
    422: "the request does not validate: the problem names each field to change",
    429: "too many jobs in flight, or too many failed authentications from this address "
    "(Retry-After)",
    503: "the database cannot be reached (Retry-After)",
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that answers these error statuses (as problems)."""
    return {status: {"description": PROBLEMS[status]} for status in statuses}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI schema say what the API sends: every 4xx and 5xx response is a
    ``Problem`` as ``application/problem+json`` (FastAPI's default 422 documents its own
    ``HTTPValidationError`` as ``application/json``, which this API never sends); every /v1
    operation can answer 401 (AuthMiddleware) and 503 (the key and the data are in the
    database), and every operation with a body 400 (one that cannot be parsed)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema()
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            added = [401, 429, 503] if path.startswith("/v1") else []
            added += [400] if "requestBody" in operation else []
            for status in added:
                responses.setdefault(str(status), {"description": PROBLEMS[status]})
            for status, response in responses.items():
                if status[0] in "45":
                    if status == "422" and response.get("description") == "Validation Error":
                        response["description"] = PROBLEMS[422]  # instead of FastAPI's
                    response["content"] = {"application/problem+json": {"schema": _PROBLEM_REF}}
    if "HTTPValidationError" not in json.dumps(schema["paths"]):  # FastAPI's, now unused
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    return schema


def install(app: FastAPI) -> None:
    app.add_exception_handler(OptbenchError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for kind in (*DATABASE_DOWN, DBAPIError):
        app.add_exception_handler(kind, _database_down)

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

"""/v1/suites: submit a suite (one tuning study per workload and study), list, inspect, its
scores and report, cancel and delete it (services/suite/)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.responses import HTMLResponse

from services.api.errors import problems
from services.api.schemas import MAX_QUERY_INT
from services.api.security import Owner
from services.api.suite_schemas import SuiteDeleted, SuiteOut, SuitePage, SuiteScoresOut
from services.errors import InvalidSpec
from services.spec.suite import LECTURE_SUITE, SUITE_PRESETS, SuiteSpec
from services.spec.validation import field_errors
from services.suite import cases

router = APIRouter(prefix="/v1/suites", tags=["suites"])


def _spec(body: dict[str, Any]) -> SuiteSpec:
    """A suite spec, or ``{"preset": "lecture"}`` for a built-in one."""
    from pydantic import ValidationError

    if set(body) == {"preset"}:
        preset = body["preset"]
        if not isinstance(preset, str) or preset not in SUITE_PRESETS:
            message = f"'{preset}' is not a suite preset; use one of {', '.join(SUITE_PRESETS)}"
            raise InvalidSpec(
                f"preset: {message}", errors=[{"field": "preset", "message": message}]
            )
        body = SUITE_PRESETS[preset]
    try:
        return SuiteSpec.model_validate(body)
    except ValidationError as error:
        errors = field_errors(error.errors())
        raise InvalidSpec(
            "; ".join(map(str, errors)),
            errors=[{"field": e.field, "message": e.message} for e in errors],
        ) from None


@router.post(
    "",
    operation_id="submitSuite",
    status_code=202,
    response_model=SuiteOut,
    responses={
        200: {"model": SuiteOut, "description": "a repeat with the same Idempotency-Key"},
        422: {"description": "invalid suite spec or over a limit (problem+json naming it)"},
        429: {"description": "too many jobs in flight (problem+json, Retry-After)"},
    },
)
def submit_suite(
    body: Annotated[
        dict[str, Any],
        Body(
            description='a suite spec (services/spec/suite.py), or {"preset": "lecture"}',
            openapi_examples={
                "preset": {"summary": "the built-in suite", "value": {"preset": "lecture"}},
                "lecture": {"summary": "the built-in suite, written out", "value": LECTURE_SUITE},
            },
        ),
    ],
    response: Response,
    owner: Owner,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> SuiteOut:
    """Queue a suite: one tuning-study job per workload and study, owned by the caller, each
    sent to the workers as its own job (202). The suite counts as one job in flight."""
    submitted = cases.submit(_spec(body), owner=owner, idempotency_key=idempotency_key)
    response.headers["Location"] = f"/v1/suites/{submitted.suite.id}"
    if not submitted.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return SuiteOut.of(submitted.suite)


@router.get("", operation_id="listSuites", response_model=SuitePage)
def list_suites(
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
) -> SuitePage:
    """The caller's suites, newest first."""
    items, total = cases.listing(limit, offset, owner=owner)
    return SuitePage(
        items=[SuiteOut.of(suite) for suite in items], total=total, limit=limit, offset=offset
    )


@router.get("/presets", operation_id="listSuitePresets", response_model=dict[str, SuiteSpec])
def suite_presets() -> dict[str, SuiteSpec]:
    """The built-in suites by name (``lecture``: LECTURE_SUITE), for a form's preset buttons;
    ``POST /v1/suites`` takes ``{"preset": NAME}`` for any of them."""
    return {name: SuiteSpec.model_validate(spec) for name, spec in SUITE_PRESETS.items()}


@router.get(
    "/{suite_id}", operation_id="getSuite", response_model=SuiteOut, responses=problems(404)
)
def get_suite(suite_id: uuid.UUID, owner: Owner) -> SuiteOut:
    """Status (following its jobs') and its jobs, one per workload and study."""
    return SuiteOut.of(cases.get(suite_id, owner=owner))


@router.get(
    "/{suite_id}/scores",
    operation_id="getSuiteScores",
    response_model=SuiteScoresOut,
    responses=problems(404),
)
def get_suite_scores(suite_id: uuid.UUID, owner: Owner) -> dict[str, Any]:
    """Every t(s, w) with its per-study values, r(s, w), the performance profile rho_s(τ), the
    score B_s, the geometric-mean speedup and DeepOBS speed, with their definitions (from
    what is stored now: provisional while the suite runs)."""
    return cases.scores(suite_id, owner=owner)


@router.get(
    "/{suite_id}/report",
    operation_id="getSuiteReport",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {}}, "description": "the suite's report page"},
        404: {"description": "unknown suite"},
    },
)
def get_suite_report(suite_id: uuid.UUID, owner: Owner) -> HTMLResponse:
    """A self-contained HTML page of the scores: profile plot, score table, heat map."""
    from services.report.suite_page import render_suite_report, suite_csp

    html = render_suite_report(cases.scores(suite_id, owner=owner))
    # The page's own policy: exactly its two inline scripts, by hash.
    return HTMLResponse(html, headers={"Content-Security-Policy": suite_csp()})


@router.post(
    "/{suite_id}/cancel",
    operation_id="cancelSuite",
    response_model=SuiteOut,
    responses=problems(404, 409),
)
def cancel_suite(suite_id: uuid.UUID, owner: Owner) -> SuiteOut:
    """Cancel every queued or running job of the suite (409 once all have ended)."""
    return SuiteOut.of(cases.cancel(suite_id, owner=owner))


@router.delete(
    "/{suite_id}",
    operation_id="deleteSuite",
    response_model=SuiteDeleted,
    responses=problems(404, 409),
)
def delete_suite(suite_id: uuid.UUID, owner: Owner) -> SuiteDeleted:
    """Delete a suite whose jobs have all ended, with its jobs, their runs and every row
    under them, in one transaction (409 while one is queued or running: cancel first)."""
    return SuiteDeleted.model_validate(cases.delete(suite_id, owner=owner))

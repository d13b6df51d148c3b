"""/v1/jobs: submit, list, inspect; the summary of one job (its metrics: routes/metrics.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Response
from pydantic import BaseModel, Field

from services import job_watch, jobs
from services.api.errors import problems
from services.api.schemas import MAX_QUERY_INT, JobOut, JobPage, SummaryOut
from services.api.security import Owner
from services.spec import LECTURE_SPEC, JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_EXAMPLES = {
    "lecture": {
        "summary": "The lecture's exercise: eight optimizers on digits",
        "value": LECTURE_SPEC,
    },
    "adamw-vs-nadam": {
        "summary": "Two torch.optim classes, three seeds, a synthetic data set",
        "value": {
            "name": "AdamW vs NAdam",
            "dataset": {"name": "classification", "n_samples": 4000, "n_classes": 5},
            "model": {"name": "mlp", "hidden": [64, 64], "activation": "gelu"},
            "optimizers": [{"name": "AdamW", "lr": 0.003}, {"name": "NAdam", "lr": 0.002}],
            "epochs": 5,
            "seeds": [0, 1, 2],
            "target": {"metric": "val_accuracy", "value": 0.8},
        },
    },
}


@router.post(
    "",
    operation_id="submitJob",
    status_code=202,
    response_model=JobOut,
    responses={
        200: {
            "model": JobOut,
            "description": "a repeat of an earlier request with the same Idempotency-Key: "
            "that request's job (header Idempotent-Replayed: true)",
        },
        413: {"description": "body over OPTBENCH_MAX_REQUEST_BYTES (problem+json)"},
        422: {
            "description": "invalid spec, over a limit (problem+json naming it), or an "
            "Idempotency-Key already used for another spec"
        },
        429: {"description": "too many jobs in flight (problem+json, Retry-After)"},
        503: {"description": "the database cannot be reached (problem+json, Retry-After)"},
    },
)
def submit_job(
    spec: Annotated[JobSpec, Body(openapi_examples=_EXAMPLES)],
    response: Response,
    owner: Owner,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="any unique string (a UUID): a repeat of the request with the same "
            "key and spec returns the job the first one created (200) instead of a new one; "
            "with another spec it is a 422. Kept with the job, per owner.",
        ),
    ] = None,
) -> JobOut:
    """Queue a comparison: one run per optimizer entry and seed, owned by the caller (202).

    Limits (settings, README "Authentication and limits"): runs per job, steps per run and
    model parameters (422 naming the field and the setting), jobs queued or running per owner
    (429 with Retry-After). The job is stored before it is queued: if the broker is down it
    stays ``queued`` and is sent when the broker is back (README "Guarantees")."""
    submitted = jobs.submit(spec, owner=owner, idempotency_key=idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{submitted.job.id}"
    if not submitted.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return JobOut.of(submitted.job)


@router.get("", operation_id="listJobs", response_model=JobPage)
def list_jobs(
    owner: Owner,
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
    name: Annotated[
        str | None,
        Query(max_length=200, description="a part of the job's name (case-insensitive)"),
    ] = None,
    dataset: Annotated[
        str | None,
        Query(max_length=64, description="the spec's data set name, e.g. digits"),
    ] = None,
    model: Annotated[
        str | None, Query(max_length=64, description="the spec's model name, e.g. mlp")
    ] = None,
    best: Annotated[
        str | None,
        Query(
            max_length=64,
            description="the best optimizer: finished jobs whose rank-1 label (best_label) "
            "is this one, e.g. adam",
        ),
    ] = None,
) -> JobPage:
    """The caller's jobs, newest first; ``name``, ``dataset``, ``model``, ``best`` and
    ``status`` narrow the list (all that are given must hold; an unknown data set or model
    is a 422)."""
    items, total = jobs.listing(
        status, limit, offset, owner=owner, name=name, dataset=dataset, model=model, best=best
    )
    return JobPage(items=[JobOut.of(job) for job in items], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", operation_id="getJob", response_model=JobOut, responses=problems(404))
async def get_job(
    job_id: uuid.UUID,
    owner: Owner,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=job_watch.MAX_WAIT_SECONDS,
            description="long-poll: answer as soon as the job's status or progress changes "
            "(at once for a job that has ended), or after this many seconds with its "
            "current state; 0 (the default) answers at once",
        ),
    ] = 0,
) -> JobOut:
    """Status, progress (steps done / total), runs and, once a worker has it, where the
    job's time went (``timings``)."""
    job = await job_watch.wait_for_change(
        lambda: jobs.get(job_id, owner=owner),
        wait,
        state=job_watch.job_state,
        ended=job_watch.job_ended,
    )
    return JobOut.of(job)


@router.post(
    "/{job_id}/cancel",
    operation_id="cancelJob",
    response_model=JobOut,
    responses=problems(404, 409),
)
def cancel_job(job_id: uuid.UUID, owner: Owner) -> JobOut:
    """Cancel a queued job before it starts, or a running one: its workers stop at their next
    metric flush (every OPTBENCH_FLUSH_EVERY_STEPS steps; checked at most every quarter
    second). Steps already stored stay queryable; runs that had finished keep their
    results. 409 once the job has ended."""
    return JobOut.of(jobs.cancel(job_id, owner=owner))


@router.get(
    "/{job_id}/summary",
    operation_id="getSummary",
    response_model=SummaryOut,
    responses=problems(404),
)
def get_summary(job_id: uuid.UUID, owner: Owner) -> dict[str, Any]:
    """Per optimizer label: final train loss, best validation accuracy, steps to the target."""
    return jobs.summary(job_id, owner=owner)


class DeletedRows(BaseModel):
    runs: int
    step_rows: int
    epoch_rows: int
    step_rollups: int = Field(description="always 0 on SQLite, which keeps no rollup")
    checkpoints: int


class JobDeleted(BaseModel):
    id: uuid.UUID
    deleted: DeletedRows = Field(description="the rows of each kind that went with the job")


@router.delete(
    "/{job_id}",
    operation_id="deleteJob",
    response_model=JobDeleted,
    responses={
        404: {"description": "no such job, or another owner's (problem+json)"},
        409: {
            "description": "the job is queued or running: cancel it first; or it was "
            "cancelled a moment ago and its workers are still stopping (Retry-After)"
        },
    },
)
def delete_job(job_id: uuid.UUID, owner: Owner) -> JobDeleted:
    """Delete a finished (succeeded, failed or cancelled) job: the job, its runs, their step
    and epoch rows, step rollups and checkpoints, in one transaction. A queued or running
    job is a 409: cancel it first (``POST /v1/jobs/{id}/cancel``). Data sets it used stay."""
    deleted = jobs.delete(job_id, owner=owner)
    return JobDeleted(id=deleted.job_id, deleted=DeletedRows(**deleted.rows))

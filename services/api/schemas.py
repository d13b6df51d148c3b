"""Response bodies of the HTTP API (requests are the job spec itself, services/spec)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from services.db import store
from services.db.models import Job, Run

# The largest offset or step a query may name: PostgreSQL's INTEGER (steps are stored as
# one); a larger number would make the database refuse the query (a 500), not find nothing.
MAX_QUERY_INT = 2**31 - 1


class RunOut(BaseModel):
    id: int
    label: str
    optimizer: str
    hyperparameters: dict[str, Any]
    seed: int
    status: str
    steps_done: int
    total_steps: int | None
    diverged: bool
    error: str | None
    fused: bool | None = None  # known once the run has ended
    fusion: str | None = None  # "fused with N runs", or why it trained alone

    @classmethod
    def of(cls, run: Run) -> RunOut:
        return cls.model_validate(run, from_attributes=True)


class ProgressOut(BaseModel):
    steps_done: int
    total_steps: int | None
    fraction: float | None


class JobOut(BaseModel):
    id: uuid.UUID
    name: str
    status: str
    error: str | None
    device: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: ProgressOut
    runs: list[RunOut]
    spec: dict[str, Any]

    @classmethod
    def of(cls, job: Job) -> JobOut:
        progress = store.progress(job)
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            error=job.error,
            device=job.device,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            progress=ProgressOut(
                steps_done=progress.steps_done,
                total_steps=progress.total_steps,
                fraction=progress.fraction,
            ),
            runs=[RunOut.of(run) for run in job.runs],
            spec=job.spec,
        )


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class RunSeries(BaseModel):
    run_id: int
    label: str
    optimizer: str
    seed: int
    series: dict[str, list[Any]]


class MetricsOut(BaseModel):
    job_id: uuid.UUID
    granularity: str
    runs: list[RunSeries]

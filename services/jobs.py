"""Job use cases: one function per use case, one transaction each. Routes and the CLI call these."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from services.db import metric_queries, store
from services.db.models import FINISHED, Dataset, Job
from services.db.session import unit_of_work
from services.errors import InvalidSpec
from services.queue import enqueue_job
from services.spec import JobSpec
from services.spec.job import TASK_METRICS
from services.summary import job_summary
from services.telemetry import JOBS_SUBMITTED

log = logging.getLogger(__name__)


def submit(spec: JobSpec, enqueue: Callable[[uuid.UUID], None] = enqueue_job) -> Job:
    """Store the job and its runs, commit, then enqueue (never before the commit)."""
    with unit_of_work() as session:
        _check_upload(session, spec)
        job = store.create_job(session, spec)
    JOBS_SUBMITTED.inc()
    try:
        enqueue(job.id)
    except Exception:  # the job is stored and stays queued; the broker may be down
        log.exception("job %s stored but not enqueued", job.id)
    return job


def _check_upload(session: Session, spec: JobSpec) -> None:
    """An uploaded data set must exist, and the target must fit its stored task."""
    if spec.dataset.name != "upload":  # type: ignore[attr-defined]
        return
    dataset_id = spec.dataset.id  # type: ignore[attr-defined]
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise InvalidSpec(
            f"dataset.id: no uploaded data set with id '{dataset_id}'; "
            "upload one with POST /v1/datasets"
        )
    metrics_allowed = TASK_METRICS[dataset.task]
    if spec.target and spec.target.metric not in metrics_allowed:
        raise InvalidSpec(
            f"target.metric: '{spec.target.metric}' does not fit the uploaded {dataset.task} "
            f"data set; use one of {', '.join(metrics_allowed)}"
        )


def get(job_id: uuid.UUID | str) -> Job:
    with unit_of_work() as session:
        return store.get_job(session, job_id)


def listing(status: str | None, limit: int, offset: int) -> tuple[list[Job], int]:
    with unit_of_work() as session:
        return store.list_jobs(
            session, status=status, limit=limit, offset=offset
        ), store.count_jobs(session, status=status)


def summary(job_id: uuid.UUID | str) -> dict[str, Any]:
    """The stored summary of a finished job, recomputed from the metrics otherwise."""
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        if job.status in FINISHED and job.summary is not None:
            return job.summary
        return job_summary(session, job)


def series(
    job_id: uuid.UUID | str, granularity: str
) -> tuple[Job, dict[int, dict[str, list[Any]]]]:
    if granularity not in ("step", "epoch"):
        raise InvalidSpec(f"granularity: must be 'step' or 'epoch', got '{granularity}'")
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        return job, metric_queries.series(session, [run.id for run in job.runs], granularity)

"""Suite use cases: one function per use case, one transaction each (like services/jobs.py).

A suite submission stores the suite and one tuning-study job per (workload, study) in one
transaction, through the job submission path's own checks (``jobs.create_checked``: the
upload check and the per-job limits, each child in turn, under the owner's lock), then hands
each job to the broker (``jobs.send``): each trains as its own fused groups on whichever
worker takes it, so a suite spreads over the workers. The suite counts as one job against
the owner's jobs-in-flight limit (``store.count_in_flight``). An Idempotency-Key works as
for jobs: the same key and spec answer with the suite created first.

A suite's status follows its jobs' (``suites.status_of``), refreshed whenever it is read.
Deleting a suite deletes its jobs with all their rows, once every job has ended.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete as sa_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services import jobs as job_cases
from services import limits
from services.db import store, suites
from services.db.models import FINISHED, Job, Suite
from services.db.session import unit_of_work
from services.errors import Conflict, InvalidSpec, LimitExceeded, TooManyRequests
from services.queue import enqueue_job
from services.settings import get_settings
from services.spec import JobSpec
from services.spec.suite import SuiteSpec
from services.suite.results import scores_document
from services.telemetry import JOBS_REJECTED, JOBS_SUBMITTED


@dataclass
class SubmittedSuite:
    suite: Suite
    created: bool


def request_sha256(spec: SuiteSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _same_request(suite: Suite, digest: str | None) -> Suite:
    if suite.request_sha256 != digest:
        raise job_cases.IdempotencyKeyReused(
            f"the Idempotency-Key was used for another request (suite {suite.id}, a different "
            "spec); send a new key for a new suite",
            suite_id=str(suite.id),
        )
    return suite


def _child(
    session: Session, spec: SuiteSpec, owner: str, suite: Suite, item: tuple[str, int, Any]
) -> Job:
    """Store one child job (``item``: workload name, study, JobSpec JSON) through the job
    submission's checks; a limit it goes over is reported with the workload's place."""
    workload, study, job_json = item
    index = [w.name for w in spec.workloads].index(workload)
    try:
        job = job_cases.create_checked(session, JobSpec.model_validate(job_json), owner)
    except InvalidSpec as error:  # the same error (and status), naming the workload
        error.detail = f"workloads[{index}] ({workload}): {error.detail}"
        error.args = (error.detail,)
        for item_error in error.extra.get("errors", []):
            item_error["field"] = f"workloads[{index}].{item_error['field']}"
        raise
    job.suite_id, job.suite_workload, job.suite_study = suite.id, workload, study
    return job


def submit(
    spec: SuiteSpec,
    enqueue: Callable[[uuid.UUID], None] = enqueue_job,
    *,
    owner: str = "local",
    idempotency_key: str | None = None,
) -> SubmittedSuite:
    """Store the suite and its jobs as ``owner``'s, commit, then enqueue every job (see the
    module docstring)."""
    settings = get_settings()
    key = None if idempotency_key is None else job_cases.check_key(idempotency_key)
    digest = None if key is None else request_sha256(spec)
    try:
        with unit_of_work() as session:
            store.lock_owner(session, owner)
            if key is not None and (earlier := suites.find_keyed_suite(session, owner, key)):
                return SubmittedSuite(_same_request(earlier, digest), created=False)
            limits.check_in_flight(owner, store.count_in_flight(session, owner), settings)
            suite = Suite(
                name=spec.name,
                owner=owner,
                spec=spec.model_dump(mode="json"),
                idempotency_key=key,
                request_sha256=digest,
            )
            session.add(suite)
            session.flush()
            children = [_child(session, spec, owner, suite, item) for item in spec.job_specs()]
            session.flush()
            session.refresh(suite, ["jobs"])
    except IntegrityError:
        if key is None:
            raise
        with unit_of_work() as session:  # another request with the key committed first
            earlier = suites.find_keyed_suite(session, owner, key)
        if earlier is None:
            raise
        return SubmittedSuite(_same_request(earlier, digest), created=False)
    except (InvalidSpec, TooManyRequests) as error:
        reason = {LimitExceeded: "limit", TooManyRequests: "in_flight"}.get(type(error))
        JOBS_REJECTED.labels(reason or "invalid_spec").inc()
        raise
    for job in children:
        JOBS_SUBMITTED.inc()
        job_cases.send(job, enqueue)
    return SubmittedSuite(suite, created=True)


def get(suite_id: uuid.UUID | str, *, owner: str | None = None) -> Suite:
    """The suite with its jobs and their runs, its status refreshed from theirs."""
    with unit_of_work() as session:
        suite = suites.get_owned_suite(session, suite_id, owner, with_runs=True)
        suites.refresh_status(suite)
        return suite


def listing(limit: int, offset: int, *, owner: str | None = None) -> tuple[list[Suite], int]:
    with unit_of_work() as session:
        items, total = suites.list_suites_of(session, owner, limit=limit, offset=offset)
        for suite in items:
            suites.refresh_status(suite)
        return items, total


def scores(suite_id: uuid.UUID | str, *, owner: str | None = None) -> dict[str, Any]:
    """The scores document (services/suite/results.py), from what is stored now."""
    with unit_of_work() as session:
        suite = suites.get_owned_suite(session, suite_id, owner, with_runs=True)
        suites.refresh_status(suite)
        return scores_document(session, suite)


def cancel(suite_id: uuid.UUID | str, *, owner: str | None = None) -> Suite:
    """Cancel every queued or running job of the suite (Conflict once all have ended)."""
    with unit_of_work() as session:
        suite = suites.get_owned_suite(session, suite_id, owner)
        live = [job.id for job in suite.jobs if job.status not in FINISHED]
        if not live:
            raise Conflict(f"suite {suite.id} has ended ({suite.status}); nothing to cancel")
        for job_id in live:
            store.cancel_job(session, store.lock_job(session, job_id))
    return get(suite_id, owner=owner)


def delete(suite_id: uuid.UUID | str, *, owner: str | None = None) -> dict[str, Any]:
    """Delete a suite whose jobs have all ended, with every job and all their rows, in one
    transaction. A job still queued or running is a Conflict: cancel the suite first; one
    whose workers may still be writing is ``jobs.StillStopping`` (Retry-After)."""
    settings = get_settings()
    with unit_of_work() as session:
        suite = suites.get_owned_suite(session, suite_id, owner)
        jobs = [store.lock_job(session, job.id) for job in suite.jobs]
        live = [job for job in jobs if job.status not in FINISHED]
        if live:
            raise Conflict(
                f"suite {suite.id} has {len(live)} job(s) queued or running: cancel it first "
                f"(POST /v1/suites/{suite.id}/cancel), then delete it"
            )
        for job in jobs:
            writing = store.runs_still_written(session, job, settings.heartbeat_timeout)
            if writing:
                raise job_cases.StillStopping(
                    f"suite {suite.id}: job {job.id}'s workers are still stopping; try again "
                    "in a few seconds",
                    retry_after=max(1, math.ceil(settings.heartbeat_seconds)),
                )
        totals: dict[str, int] = {}
        for job in jobs:
            for name, count in store.delete_job_rows(session, job.id).items():
                totals[name] = totals.get(name, 0) + count
        # A statement, not session.delete: the ORM would first set the loaded jobs' suite_id
        # to NULL, on rows already gone.
        session.execute(
            sa_delete(Suite)
            .where(Suite.id == suite.id)
            .execution_options(synchronize_session=False)
        )
        return {"id": suite.id, "jobs": len(jobs), "deleted": totals}

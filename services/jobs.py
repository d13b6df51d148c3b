"""Job use cases: one function per use case, one transaction each. Routes and the CLI call these.

Every job belongs to an owner (services/auth.py). The API passes the caller's owner to each
use case, and another owner's job is then not found (404), exactly like one that does not
exist. ``owner=None`` means any owner: for in-process callers that have the database anyway
(``optbench run``, benchmarks), never for the API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services import limits, plugins
from services.db import metric_queries, store
from services.db.models import FINISHED, Dataset, Job, Run, utcnow
from services.db.session import unit_of_work
from services.errors import Conflict, InvalidSpec, LimitExceeded, OptbenchError, TooManyRequests
from services.queue import enqueue_job
from services.settings import get_settings
from services.spec import DATASET_MODELS, MODEL_MODELS, JobSpec
from services.spec.job import TASK_METRICS
from services.summary import current_summary
from services.telemetry import JOBS_REJECTED, JOBS_SUBMITTED
from services.uploads import owned_dataset

log = logging.getLogger(__name__)


@dataclass
class Submitted:
    """What a submission did: the job, and whether this request created it (False: a repeat
    of an earlier request with the same Idempotency-Key, answered with that request's job)."""

    job: Job
    created: bool


class IdempotencyKeyReused(OptbenchError):
    """An Idempotency-Key sent again with a different job spec."""

    status, code, title = 422, "idempotency-key-reused", "Idempotency key reused"


_KEY_CHARACTERS = frozenset(chr(code) for code in range(0x21, 0x7F))  # visible ASCII
MAX_KEY_LENGTH = 200


def request_sha256(spec: JobSpec) -> str:
    """The SHA-256 of the spec's canonical JSON (validated, defaults filled in, keys sorted):
    two bodies that mean the same job hash the same, whatever their spacing or key order."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not set(key) <= _KEY_CHARACTERS:
        message = f"1 to {MAX_KEY_LENGTH} visible ASCII characters, e.g. a UUID"
        raise InvalidSpec(
            f"Idempotency-Key: {message}",
            errors=[{"field": "Idempotency-Key", "message": message}],
        )
    return key


def submit(
    spec: JobSpec,
    enqueue: Callable[[uuid.UUID], None] = enqueue_job,
    *,
    owner: str = "local",
    idempotency_key: str | None = None,
) -> Submitted:
    """Check the limits (services/limits.py), store the job and its runs as ``owner``'s,
    commit, then enqueue (never before the commit).

    With an ``idempotency_key``: the owner's job created earlier with that key is the answer
    (``created=False``) if the spec is the same, an IdempotencyKeyReused error if not. The
    owner's lock (``store.lock_owner``) orders submissions at the same moment, and the
    unique (owner, key) index decides should two get past it.

    A broker that does not take the task does not fail the submission: the job is stored
    and stays queued, and services/reconcile.py sends it when the broker is back."""
    settings = get_settings()
    key = None if idempotency_key is None else check_key(idempotency_key)
    try:
        spec = _with_plugins(spec, settings.heartbeat_timeout)
    except InvalidSpec:
        JOBS_REJECTED.labels("invalid_spec").inc()
        raise
    digest = None if key is None else request_sha256(spec)
    try:
        with unit_of_work() as session:
            store.lock_owner(session, owner)
            if key is not None and (earlier := store.find_keyed_job(session, owner, key)):
                return Submitted(_same_request(earlier, digest), created=False)
            limits.check_in_flight(owner, store.count_in_flight(session, owner), settings)
            job = create_checked(session, spec, owner, key=key, request_sha256=digest)
    except IntegrityError:
        if key is None:
            raise
        with unit_of_work() as session:  # another request with the key committed first
            earlier = store.find_keyed_job(session, owner, key)
        if earlier is None:
            raise
        return Submitted(_same_request(earlier, digest), created=False)
    except (InvalidSpec, TooManyRequests) as error:
        reason = {LimitExceeded: "limit", TooManyRequests: "in_flight"}.get(type(error))
        JOBS_REJECTED.labels(reason or "invalid_spec").inc()
        raise
    JOBS_SUBMITTED.inc()
    send(job, enqueue)
    return Submitted(job, created=True)


def create_checked(
    session: Session,
    spec: JobSpec,
    owner: str,
    *,
    key: str | None = None,
    request_sha256: str | None = None,
) -> Job:
    """Store a job whose spec passed the upload check and the per-job limits, in the
    caller's transaction (its owner's lock held): ``submit``'s and a suite's (each child)."""
    upload = _check_upload(session, spec, owner)
    limits.check_spec(spec, get_settings(), upload)
    return store.create_keyed_job(
        session, spec, owner, key=key, request_sha256=request_sha256, enqueued_at=utcnow()
    )


def send(job: Job, enqueue: Callable[[uuid.UUID], None] = enqueue_job) -> None:
    """Hand a committed job to the broker; if it does not take it, the job stays queued and
    the reconciler sends it later."""
    try:
        enqueue(job.id)
    except Exception as error:  # the job is stored and stays queued; the broker may be down
        log.warning(
            "job %s stored but not enqueued (%s: %s); the reconciler will send it",
            job.id,
            type(error).__name__,
            error,
        )
        job.enqueued_at = None
        _forget_enqueue(job.id)


def _with_plugins(spec: JobSpec, timeout_seconds: float) -> JobSpec:
    """The spec with its plugin optimizers checked against the live workers' catalog and
    typed (services/plugins.py); unchanged, without a database read, when it has none."""
    if not plugins.has_plugins(spec):
        return spec
    with unit_of_work() as session:
        return plugins.check_spec(session, spec, timeout_seconds)


def _same_request(job: Job, digest: str | None) -> Job:
    if job.request_sha256 != digest:
        raise IdempotencyKeyReused(
            f"the Idempotency-Key was used for another request (job {job.id}, a different "
            "spec); send a new key for a new job",
            job_id=str(job.id),
        )
    return job


def _forget_enqueue(job_id: uuid.UUID) -> None:
    """Record that the broker did not take the task (best effort: with the database down too,
    the reconciler finds the job later by its missing message where the broker can say)."""
    try:
        with unit_of_work() as session:
            store.mark_not_enqueued(session, job_id)
    except Exception:
        log.exception("job %s: could not record that it was not enqueued", job_id)


def _check_upload(session: Session, spec: JobSpec, owner: str) -> Dataset | None:
    """An uploaded data set must exist and be the owner's (another owner's is reported as
    not existing), and the target must fit its stored task. Returns its row."""
    if spec.dataset.name != "upload":  # type: ignore[attr-defined]
        return None
    dataset_id = spec.dataset.id  # type: ignore[attr-defined]
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.owner != owner:
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
    return dataset


def counts_by_status() -> dict[str, int]:
    """Jobs per status (for the ``optbench_jobs`` gauge, read at scrape time)."""
    with unit_of_work() as session:
        return store.count_by_status(session)


def get(job_id: uuid.UUID | str, *, owner: str | None = None) -> Job:
    with unit_of_work() as session:
        return store.get_owned_job(session, job_id, owner)


def cancel(job_id: uuid.UUID | str, *, owner: str | None = None) -> Job:
    """Cancel a queued or running job (Conflict once it has ended); its stored steps stay."""
    with unit_of_work() as session:
        owned = store.get_owned_job(session, job_id, owner, with_runs=False)
        job = store.lock_job(session, owned.id)
        if not store.cancel_job(session, job):
            raise Conflict(
                f"job {job.id} is already {job.status}; only a queued or running job can be "
                "cancelled"
            )
        return job


@dataclass
class Deleted:
    """What a job's deletion removed: the job's id and the rows of each kind
    (``store.delete_job_rows``)."""

    job_id: uuid.UUID
    rows: dict[str, int]


class StillStopping(Conflict):
    """A cancelled (or failed) job whose workers may still be writing its runs."""

    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after_seconds=retry_after, **extra)
        self.headers["Retry-After"] = str(retry_after)


def delete(job_id: uuid.UUID | str, *, owner: str | None = None) -> Deleted:
    """Delete a finished job with its runs, step and epoch rows, rollups and checkpoints, in
    one transaction (all of it or, on any error, nothing).

    A queued or running job is a Conflict ("cancel it first"): its workers would write rows
    for runs that no longer exist. So is a finished job whose workers may still be writing
    (a cancelled job's workers stop at their next flush; a failed job's other parts finish
    their runs): ``StillStopping``, with Retry-After. The job's row is locked first
    (``store.lock_job``), so a part finalising it or the reconciler wait, then find it gone."""
    settings = get_settings()
    with unit_of_work() as session:
        owned = store.get_owned_job(session, job_id, owner, with_runs=False)
        job = store.lock_job(session, owned.id)
        if job.suite_id is not None:
            raise Conflict(
                f"job {job.id} is part of suite {job.suite_id} (its scores read it): delete the "
                f"suite instead (DELETE /v1/suites/{job.suite_id})"
            )
        if job.status not in FINISHED:
            raise Conflict(
                f"job {job.id} is {job.status}: cancel it first (POST /v1/jobs/{job.id}/cancel "
                "or `optbench cancel`), then delete it"
            )
        writing = store.runs_still_written(session, job, settings.heartbeat_timeout)
        if writing:
            raise StillStopping(
                f"job {job.id} is {job.status}, but its workers are still stopping (runs "
                f"{', '.join(map(str, writing))} were written a moment ago; a worker stops at "
                "its next metric flush): try again in a few seconds",
                retry_after=max(1, math.ceil(settings.heartbeat_seconds)),
            )
        rows = store.delete_job_rows(session, job.id)
        return Deleted(job.id, rows)


def delete_dataset(dataset_id: uuid.UUID | str, *, owner: str | None = None) -> Dataset:
    """Delete an uploaded data set (returns its row, metadata loaded); a Conflict while a
    queued or running job uses it. Finished jobs that trained on it keep their results.

    Under the owner's submission lock (``store.lock_owner``): a submission naming the data
    set at the same moment either commits first (and this is the 409) or finds it gone (the
    422 for an unknown upload)."""
    with unit_of_work() as session:
        dataset = owned_dataset(session, dataset_id, owner)
        store.lock_owner(session, dataset.owner)
        users = store.jobs_using_dataset(session, dataset)
        if users:
            listed = ", ".join(f"{job} ({status})" for job, status in users)
            raise Conflict(
                f"data set {dataset.id} is used by {len(users)} queued or running "
                f"job{'s' if len(users) > 1 else ''}: {listed}; cancel "
                f"{'them' if len(users) > 1 else 'it'} or wait for the end, then delete it"
            )
        session.delete(dataset)
        return dataset


def check_owned(job_id: uuid.UUID | str, *, owner: str | None) -> None:
    """NotFound unless the job exists and is the owner's (before reading it elsewhere)."""
    with unit_of_work() as session:
        store.get_owned_job(session, job_id, owner, with_runs=False)


def listing(
    status: str | None,
    limit: int,
    offset: int,
    *,
    owner: str | None = None,
    name: str | None = None,
    dataset: str | None = None,
    model: str | None = None,
    best: str | None = None,
) -> tuple[list[Job], int]:
    """The owner's jobs (everyone's for None), newest first, and how many there are.

    Filters (each optional, all of them must hold): ``name`` a substring of the job's name,
    case-insensitive; ``dataset`` and ``model`` the spec's ``dataset.name`` and ``model.name``
    exactly (an unknown name is a 422 listing the known ones, not an empty page). They are
    SQL on the stored spec JSON: SQLAlchemy's JSON path renders as ``json_extract`` on SQLite
    and ``#>>`` on PostgreSQL, so both databases filter before the page is cut. ``best``: the
    finished jobs whose stored summary's rank-1 label is this one (``JobOut.best_label``)."""
    conditions = []
    if name:
        conditions.append(Job.name.icontains(name, autoescape=True))
    for field, value, known in (
        ("dataset", dataset, DATASET_MODELS),
        ("model", model, MODEL_MODELS),
    ):
        if not value:
            continue
        if value not in known:
            message = f"no {field} named '{value}'; use one of {', '.join(known)}"
            raise InvalidSpec(f"{field}: {message}", errors=[{"field": field, "message": message}])
        conditions.append(Job.spec[(field, "name")].as_string() == value)
    if best:
        conditions.append(Job.status.in_(FINISHED) & (Job.summary["best"].as_string() == best))
    with unit_of_work() as session:
        return store.list_jobs_of(
            session, owner, status=status, limit=limit, offset=offset, where=conditions
        )


def summary(job_id: uuid.UUID | str, *, owner: str | None = None) -> dict[str, Any]:
    """The stored summary of a finished job, recomputed from the metrics otherwise."""
    with unit_of_work() as session:
        job = store.get_owned_job(session, job_id, owner)
        return current_summary(session, job)


def series(
    job_id: uuid.UUID | str, granularity: str, *, owner: str | None = None
) -> tuple[Job, dict[int, dict[str, list[Any]]]]:
    """Every raw point of every run of the job: ``(job, {run_id: columns})``."""
    result = metrics(job_id, metric_queries.SeriesQuery(granularity=granularity), owner=owner)
    return result.job, result.page.columns


@dataclass
class JobMetrics:
    """A metrics query's answer: the job, the runs selected (in the job's order) and their
    columns (see :mod:`services.db.metric_queries` for the raw and downsampled shapes)."""

    job: Job
    runs: list[Run]
    page: metric_queries.SeriesPage


def select_runs(job: Job, selectors: Sequence[str] | None) -> list[Run]:
    """The job's runs named by ``selectors`` (run ids or labels; a label selects that entry's
    run of every seed), in the job's order; every run when there is no selector."""
    if not selectors:
        return list(job.runs)
    by_label: dict[str, list[Run]] = {}
    for run in job.runs:
        by_label.setdefault(run.label, []).append(run)
    by_id = {str(run.id): run for run in job.runs}
    wanted: set[int] = set()
    for selector in selectors:
        runs = by_label.get(selector) or ([by_id[selector]] if selector in by_id else [])
        if not runs:
            raise metric_queries.invalid(
                "runs",
                f"'{selector}' is neither a label nor a run id of this job; labels: "
                f"{', '.join(by_label) or 'none'}; run ids: {', '.join(by_id) or 'none'}",
            )
        wanted.update(run.id for run in runs)
    return [run for run in job.runs if run.id in wanted]


def metrics(
    job_id: uuid.UUID | str,
    query: metric_queries.SeriesQuery,
    runs: Sequence[str] | None = None,
    *,
    owner: str | None = None,
) -> JobMetrics:
    """Series of a job's runs (all, or those named by id or label), raw or downsampled."""
    query = query.checked()
    with unit_of_work() as session:
        job = store.get_owned_job(session, job_id, owner)
        selected = select_runs(job, runs)
        page = metric_queries.fetch(session, [run.id for run in selected], query)
        return JobMetrics(job, selected, page)


def metrics_rows(
    job_id: uuid.UUID | str,
    query: metric_queries.SeriesQuery,
    runs: Sequence[str] | None = None,
    *,
    owner: str | None = None,
) -> tuple[JobMetrics, Iterator[Sequence[Any]]]:
    """For exports: the job and its selected runs (checked now, so that a bad request fails
    before a response starts), and an iterator over ``(run_id, *query.columns)`` rows that
    streams them from its own transaction. A page (``limit``) is read at once and its
    ``next_cursor`` set; else the rows come in batches and ``next_cursor`` is None."""
    query = query.checked()
    with unit_of_work() as session:
        job = store.get_owned_job(session, job_id, owner)
        selected = select_runs(job, runs)
        ids = [run.id for run in selected]
        if query.limit is not None:
            page = metric_queries.fetch(session, ids, query)
            rows: list[Sequence[Any]] = []
            for run_id, columns in page.columns.items():
                rows += [(run_id, *values) for values in zip(*columns.values(), strict=True)]
            return JobMetrics(job, selected, page), iter(rows)
    empty = metric_queries.SeriesPage({}, None, query)

    def stream() -> Iterator[Sequence[Any]]:
        with unit_of_work() as session:
            yield from metric_queries.rows(session, ids, query)

    return JobMetrics(job, selected, empty), stream()

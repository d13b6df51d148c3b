"""Jobs and runs: the use cases' reads and writes. Callers own the transaction
(``with unit_of_work() as session``); nothing here commits."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, delete, func, select, text, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session, selectinload

from services.db import leases
from services.db.models import (
    CANCELLED,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Dataset,
    EpochMetric,
    Job,
    Run,
    RunCheckpoint,
    StepMetric,
    StepRollup,
    utcnow,
)
from services.errors import NotFound
from services.spec import JobSpec


class RunOutcome(Protocol):
    """How a run ended (the engine's RunResult has this shape; services never import it)."""

    @property
    def steps(self) -> int: ...
    @property
    def diverged(self) -> bool: ...
    @property
    def diverged_at_step(self) -> int | None: ...
    @property
    def test_loss(self) -> float | None: ...
    @property
    def test_accuracy(self) -> float | None: ...
    @property
    def fused(self) -> bool: ...
    @property
    def fusion(self) -> str | None: ...
    @property
    def pruned_at_epoch(self) -> int | None: ...


def create_job(session: Session, spec: JobSpec, owner: str = "local") -> Job:
    """Insert the job and one run per optimizer entry and seed (queued); a study's trials
    instead."""
    job = Job(name=spec.name, owner=owner, spec=spec.model_dump(mode="json"), status=QUEUED)
    if spec.tuning is not None:  # a study: its first trials (services/study/phases.py)
        from services.study.phases import first_runs

        job.runs.extend(first_runs(spec))
        session.add(job)
        session.flush()
        return job
    for seed in spec.seeds:
        for entry in spec.optimizers:
            job.runs.append(
                Run(
                    label=entry.display_label,
                    optimizer=entry.name,
                    hyperparameters=_jsonable(entry.hyperparameters()),
                    seed=seed,
                    status=QUEUED,
                )
            )
    session.add(job)
    session.flush()
    return job


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def get_job(session: Session, job_id: uuid.UUID | str, *, with_runs: bool = True) -> Job:
    try:
        key = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound(f"no job with id '{job_id}'") from None
    query = select(Job).where(Job.id == key)
    if with_runs:
        query = query.options(selectinload(Job.runs))
    job = session.scalars(query).one_or_none()
    if job is None:
        raise NotFound(f"no job with id '{job_id}'")
    return job


def list_jobs(
    session: Session, *, status: str | None = None, limit: int = 50, offset: int = 0
) -> list[Job]:
    query = select(Job).options(selectinload(Job.runs)).order_by(Job.created_at.desc())
    if status:
        query = query.where(Job.status == status)
    return list(session.scalars(query.limit(limit).offset(offset)))


def count_jobs(session: Session, *, status: str | None = None) -> int:
    query = select(func.count()).select_from(Job)
    if status:
        query = query.where(Job.status == status)
    return int(session.scalar(query) or 0)


def get_owned_job(
    session: Session, job_id: uuid.UUID | str, owner: str | None, *, with_runs: bool = True
) -> Job:
    """``get_job``, but another owner's job is not found, with the same message as one that
    does not exist (existence is not revealed). ``owner=None``: any owner's."""
    job = get_job(session, job_id, with_runs=with_runs)
    if owner is not None and job.owner != owner:
        raise NotFound(f"no job with id '{job_id}'")
    return job


def list_jobs_of(
    session: Session,
    owner: str | None,
    *,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
    where: Sequence[ColumnElement[bool]] = (),
) -> tuple[list[Job], int]:
    """One owner's jobs (everyone's for None), newest first, and how many there are;
    ``where``: more conditions on the job row (services/jobs.py's filters)."""
    query = select(Job).options(selectinload(Job.runs)).order_by(Job.created_at.desc(), Job.id)
    count = select(func.count()).select_from(Job)
    if owner is not None:
        query, count = query.where(Job.owner == owner), count.where(Job.owner == owner)
    if status:
        query, count = query.where(Job.status == status), count.where(Job.status == status)
    for condition in where:
        query, count = query.where(condition), count.where(condition)
    return list(session.scalars(query.limit(limit).offset(offset))), int(session.scalar(count) or 0)


def count_in_flight(session: Session, owner: str) -> int:
    """The owner's jobs that are queued or running; a suite's children count as one job
    (a suite is one submission, however many workloads and studies it has)."""
    query = select(func.count(func.distinct(func.coalesce(Job.suite_id, Job.id))))
    query = query.where(Job.owner == owner, Job.status.in_((QUEUED, RUNNING)))
    return int(session.scalar(query) or 0)


_OWNER_LOCKS = 0x6F62  # the advisory lock space of owners ("ob")


def lock_owner(session: Session, owner: str) -> None:
    """Serialise one owner's submissions until the transaction ends, so that two at once
    cannot both pass the jobs-in-flight limit. PostgreSQL: a transaction-level advisory lock
    on the owner's name; SQLite: the database's single write lock, taken by a no-op write."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:space, hashtext(:owner))"),
            {"space": _OWNER_LOCKS, "owner": owner},
        )
    else:
        session.execute(update(Job).where(Job.owner == owner, Job.id.is_(None)).values(owner=owner))


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
    return {status: int(count) for status, count in rows}


@dataclass(frozen=True)
class Progress:
    steps_done: int
    total_steps: int | None

    @property
    def fraction(self) -> float | None:
        if not self.total_steps:
            return None
        return min(1.0, self.steps_done / self.total_steps)


def progress(job: Job) -> Progress:
    done = sum(run.steps_done for run in job.runs)
    totals = [run.total_steps for run in job.runs]
    return Progress(done, None if None in totals else sum(t or 0 for t in totals))


def start_job(session: Session, job: Job, total_steps: Mapping[int, int], device: str) -> None:
    job.status, job.started_at, job.device, job.error = RUNNING, utcnow(), device, None
    for run in job.runs:
        run.total_steps = total_steps[run.id]


def set_run_device(session: Session, run_ids: Collection[int], device: str) -> None:
    """Where these runs train (``cuda:1``, ``cpu``): set when a part takes them, so a run
    sent again to another process records the device it trains on now."""
    session.execute(update(Run).where(Run.id.in_(list(run_ids))).values(device=device))


def start_run(session: Session, run_id: int) -> None:
    run = session.get_one(Run, run_id)
    run.status, run.started_at = RUNNING, utcnow()


def finish_run(session: Session, run_id: int, result: RunOutcome) -> None:
    """A run that ended, diverged or not, has succeeded: divergence is a result, not an error.

    Its checkpoint goes in the same transaction: a finished run is never resumed, and no
    checkpoint of it is taken after its end (the engine checkpoints active runs only)."""
    finish_runs(session, [(run_id, result)])


def finish_runs(session: Session, ends: Sequence[tuple[int, RunOutcome]]) -> None:
    """``finish_run`` for several runs at once (a group's runs ending together): one delete
    of their checkpoints and one read of their rows, whatever their number."""
    ids = [run_id for run_id, _ in ends]
    if not ids:
        return
    session.execute(delete(RunCheckpoint).where(RunCheckpoint.run_id.in_(ids)))
    runs = {run.id: run for run in session.scalars(select(Run).where(Run.id.in_(ids)))}
    for run_id, result in ends:
        run = runs.get(run_id)
        if run is None:
            raise NoResultFound(f"no run with id {run_id}")  # as session.get_one
        run.status, run.finished_at = SUCCEEDED, utcnow()
        run.diverged, run.steps_done = result.diverged, result.steps
        run.diverged_at_step = result.diverged_at_step
        run.test_loss, run.test_accuracy = result.test_loss, result.test_accuracy
        run.fused, run.fusion = result.fused, result.fusion
        run.pruned_at_epoch = result.pruned_at_epoch
        if result.pruned_at_epoch is not None:  # it will train no more: progress counts it done
            run.total_steps = result.steps


def finish_job(
    session: Session,
    job_id: uuid.UUID,
    *,
    error: str | None = None,
    summary: dict[str, Any] | None = None,
) -> None:
    """Succeeded, or failed with a readable error; runs still open fail with the job."""
    job = get_job(session, job_id)
    job.status, job.finished_at, job.error = (FAILED if error else SUCCEEDED), utcnow(), error
    if summary is not None:
        job.summary = summary
    for run in job.runs:
        if run.status == RUNNING:
            run.status, run.error, run.finished_at = FAILED, error or "job ended early", utcnow()
        elif run.status == QUEUED:
            run.status, run.error = FAILED, "not started: the job failed before this run"


def lock_job(session: Session, job_id: uuid.UUID | str) -> Job:
    """The job with its runs, its row locked until the transaction ends, so that parts of one
    job that end at the same moment decide one after another (finalise once).

    PostgreSQL: ``SELECT ... FOR UPDATE`` (a second locker waits, then reads the committed
    state: each statement of a READ COMMITTED transaction sees what committed before it).
    SQLite ignores ``FOR UPDATE``, so the transaction first writes (a no-op update), which
    takes the database's single write lock: a second writer waits for the commit, and the
    reads that follow see it."""
    key = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Job).where(Job.id == key).values(status=Job.status))
    job = session.scalars(
        select(Job)
        .where(Job.id == key)
        .options(selectinload(Job.runs))
        .with_for_update(of=Job)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if job is None:
        raise NotFound(f"no job with id '{job_id}'")
    return job


def open_runs(job: Job) -> list[Run]:
    """Runs that have not finished (queued or running)."""
    return [run for run in job.runs if run.status not in FINISHED]


def fail_runs(session: Session, job: Job, run_ids: Collection[int], error: str) -> None:
    """Fail the unfinished runs among ``run_ids``: a running one with ``error``, a queued one
    as never started."""
    for run in job.runs:
        if run.id not in run_ids:
            continue
        if run.status == RUNNING:
            run.status, run.error, run.finished_at = FAILED, error, utcnow()
        elif run.status == QUEUED:
            run.status, run.error = FAILED, "not started: the job failed before this run"


def cancel_job(session: Session, job: Job) -> bool:
    """Cancel a queued or running job and its unfinished runs; False if it had already ended.

    Workers training it notice at their next flush and stop (workers/cancellation.py); the
    steps already stored stay, and runs that finished stay as they ended."""
    if job.status in FINISHED:
        return False
    now = utcnow()
    job.status, job.finished_at = CANCELLED, now
    for run in job.runs:
        if run.status == RUNNING:
            run.status, run.finished_at, run.error = CANCELLED, now, "cancelled while training"
        elif run.status == QUEUED:
            run.status, run.error = CANCELLED, "cancelled before it started"
    return True


def job_status(session: Session, job_id: uuid.UUID) -> str:
    """The job's status alone (one small query, for the cancellation check)."""
    return session.scalars(select(Job.status).where(Job.id == job_id)).one()


def fail_job(session: Session, job: Job, error: str) -> bool:
    """Mark a running (or queued) job failed with ``error``; False if it had already ended
    (a job fails once, with the first error, and never turns succeeded afterwards)."""
    if job.status in FINISHED:
        return False
    job.status, job.finished_at, job.error = FAILED, utcnow(), error
    return True


# --- Idempotency keys and enqueueing (services/jobs.py, services/reconcile.py) -------------


def find_keyed_job(session: Session, owner: str, key: str) -> Job | None:
    """The owner's job created with this Idempotency-Key, with its runs, if there is one."""
    query = select(Job).where(Job.owner == owner, Job.idempotency_key == key)
    return session.scalars(query.options(selectinload(Job.runs))).one_or_none()


def create_keyed_job(
    session: Session,
    spec: JobSpec,
    owner: str,
    *,
    key: str | None,
    request_sha256: str | None,
    enqueued_at: datetime | None,
) -> Job:
    """``create_job``, with the request's Idempotency-Key and hash and the time its task is
    about to be sent. A second job with the owner's key fails the flush (IntegrityError)."""
    job = create_job(session, spec, owner=owner)
    job.idempotency_key, job.request_sha256 = key, request_sha256
    job.enqueued_at, job.enqueue_attempts = enqueued_at, 1
    session.flush()
    return job


def mark_not_enqueued(session: Session, job_id: uuid.UUID) -> None:
    """The broker did not take the job's task: the reconciler is to send it."""
    session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=None))


def queued_jobs_to_check(
    session: Session, sent_before: datetime
) -> list[tuple[uuid.UUID, datetime | None]]:
    """``(id, enqueued_at)`` of queued jobs never taken by the broker (``enqueued_at`` NULL)
    or last sent before ``sent_before``, oldest first."""
    query = (
        select(Job.id, Job.enqueued_at)
        .where(Job.status == QUEUED)
        .where((Job.enqueued_at.is_(None)) | (Job.enqueued_at < sent_before))
        .order_by(Job.created_at)
    )
    return [(row[0], row[1]) for row in session.execute(query)]


def claim_enqueue(
    session: Session, job_id: uuid.UUID, seen: datetime | None, now: datetime
) -> bool:
    """Record that this caller sends the queued job's task now, if no one else has since
    ``seen`` (its ``enqueued_at`` when read): a compare-and-set, so that two reconcilers at
    once send it once. False when the job moved on or another caller claimed it."""
    sent = Job.enqueued_at.is_(None) if seen is None else Job.enqueued_at == seen
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == QUEUED, sent)
        .values(enqueued_at=now, enqueue_attempts=Job.enqueue_attempts + 1)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


# --- The database's clock (run leases: services/db/leases.py) ----------------------------


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def database_now(session: Session) -> datetime:
    """The database server's clock on PostgreSQL (heartbeats are stamped with it, so the
    clocks of the workers and of the reconciler need not agree); this machine's on SQLite,
    which lives on one machine anyway."""
    if _is_postgresql(session):
        moment = session.scalar(select(func.now()))
        if isinstance(moment, datetime):
            return moment
    return utcnow()


def stranded_jobs(session: Session, finished_before: datetime) -> list[uuid.UUID]:
    """Running jobs with no unfinished run, whose last run ended before ``finished_before``:
    the part that ended it did not finalise the job (services/reconcile.py)."""
    open_runs = func.count(Run.id).filter(Run.status.in_((QUEUED, RUNNING)))
    query = (
        select(Job.id)
        .join(Run, Run.job_id == Job.id)
        .where(Job.status == RUNNING)
        .group_by(Job.id)
        .having(open_runs == 0, func.max(Run.finished_at) < finished_before)
    )
    return list(session.scalars(query))


# --- Deletion and retention (services/jobs.py, services/retention.py) ---------------------

# What a job's deletion removes, children first; the name each count is reported under.
_JOB_CHILDREN = (
    ("checkpoints", RunCheckpoint),
    ("step_rollups", StepRollup),
    ("epoch_rows", EpochMetric),
    ("step_rows", StepMetric),
)


def delete_job_rows(session: Session, job_id: uuid.UUID) -> dict[str, int]:
    """Delete the job and everything stored under it, in the caller's transaction; returns
    how many rows of each kind went (``runs``, ``step_rows``, ``epoch_rows``,
    ``step_rollups``, ``checkpoints``).

    Each table explicitly rather than by the foreign keys' ON DELETE CASCADE alone (which
    stays, as the backstop: a row a late writer inserts meanwhile goes with its run): so the
    counts are known, and nothing depends on SQLite's ``foreign_keys`` pragma being on for
    the connection at hand."""
    runs = select(Run.id).where(Run.job_id == job_id).scalar_subquery()
    counts = {}
    for name, model in _JOB_CHILDREN:
        result = session.execute(
            delete(model).where(model.run_id.in_(runs)).execution_options(synchronize_session=False)
        )
        counts[name] = _rowcount(result)
    result = session.execute(
        delete(Run).where(Run.job_id == job_id).execution_options(synchronize_session=False)
    )
    counts["runs"] = _rowcount(result)
    session.execute(
        delete(Job).where(Job.id == job_id).execution_options(synchronize_session=False)
    )
    return counts


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def runs_still_written(session: Session, job: Job, timeout_seconds: float) -> list[int]:
    """Runs of the finished ``job`` that a worker may still be writing: running (a failed
    job's other parts finish their runs) or cancelled (its worker stops at its next flush),
    with a fresh stamp naming a worker process that may be alive. A part that stops on a
    cancellation clears its runs' stamp (workers/execution.py), so right after its workers
    stopped the list is empty; a worker that died instead ages out with its heartbeat."""
    cutoff = leases.heartbeat_cutoff(database_now(session), timeout_seconds)
    return [
        run.id
        for run in job.runs
        if run.status in (RUNNING, CANCELLED)
        and leases.names_a_worker(run.worker)
        and leases.is_fresh(run.heartbeat_at, cutoff)
        and leases.may_be_alive(run.worker)
    ]


def release_cancelled(session: Session, run_ids: Collection[int]) -> None:
    """The part that trained ``run_ids`` stopped: those of its runs that were cancelled are
    held by no worker any more (``runs_still_written`` then lets their job be deleted)."""
    session.execute(
        update(Run)
        .where(Run.id.in_(list(run_ids)), Run.status == CANCELLED)
        .values(worker=None)
        .execution_options(synchronize_session=False)
    )


def jobs_using_dataset(session: Session, dataset: Dataset) -> list[tuple[uuid.UUID, str]]:
    """``(id, status)`` of the queued or running jobs whose spec names the uploaded data set.

    Only its owner's jobs may name it (services/jobs.py ``_check_upload``), and an owner has
    at most ``OPTBENCH_MAX_JOBS_IN_FLIGHT`` of them in flight: their specs are read here
    rather than queried as JSON, the same way on PostgreSQL and SQLite."""
    query = select(Job.id, Job.status, Job.spec).where(
        Job.owner == dataset.owner, Job.status.in_((QUEUED, RUNNING))
    )
    found = []
    for job_id, status, spec in session.execute(query.order_by(Job.created_at)):
        named = (spec or {}).get("dataset") or {}
        if named.get("name") == "upload" and str(named.get("id")) == str(dataset.id):
            found.append((job_id, status))
    return found


def expired_jobs(session: Session, finished_before: datetime, limit: int) -> list[uuid.UUID]:
    """Up to ``limit`` finished jobs that finished before ``finished_before``, oldest first."""
    query = (
        select(Job.id)
        .where(Job.status.in_(FINISHED), Job.finished_at < finished_before)
        .order_by(Job.finished_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def owner_uploads(session: Session, owner: str) -> tuple[int, int]:
    """How many data sets the owner has stored, and the sum of their ``size_bytes``."""
    query = select(func.count(Dataset.id), func.coalesce(func.sum(Dataset.size_bytes), 0))
    count, total = session.execute(query.where(Dataset.owner == owner)).one()
    return int(count or 0), int(total or 0)

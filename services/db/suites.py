"""Store functions of suites (services/suite/cases.py calls them in its transactions)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from services.db.models import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, SUCCEEDED, Job, Suite
from services.errors import NotFound


def get_owned_suite(
    session: Session, suite_id: uuid.UUID | str, owner: str | None, *, with_runs: bool = False
) -> Suite:
    """The suite with its jobs (and their runs with ``with_runs``); another owner's is not
    found, with the message of one that does not exist. ``owner=None``: any owner's."""
    try:
        key = suite_id if isinstance(suite_id, uuid.UUID) else uuid.UUID(str(suite_id))
    except ValueError:
        raise NotFound(f"no suite with id '{suite_id}'") from None
    loader = selectinload(Suite.jobs)
    query = select(Suite).where(Suite.id == key)
    query = query.options(loader.selectinload(Job.runs) if with_runs else loader)
    suite = session.scalars(query).one_or_none()
    if suite is None or (owner is not None and suite.owner != owner):
        raise NotFound(f"no suite with id '{suite_id}'")
    return suite


def find_keyed_suite(session: Session, owner: str, key: str) -> Suite | None:
    query = select(Suite).where(Suite.owner == owner, Suite.idempotency_key == key)
    return session.scalars(query.options(selectinload(Suite.jobs))).one_or_none()


def list_suites_of(
    session: Session, owner: str | None, *, limit: int = 50, offset: int = 0
) -> tuple[list[Suite], int]:
    """One owner's suites (everyone's for None), newest first, and how many there are."""
    query = select(Suite).options(selectinload(Suite.jobs)).order_by(Suite.created_at.desc())
    count = select(func.count()).select_from(Suite)
    if owner is not None:
        query, count = query.where(Suite.owner == owner), count.where(Suite.owner == owner)
    return list(session.scalars(query.limit(limit).offset(offset))), int(session.scalar(count) or 0)


def status_of(statuses: list[str]) -> str:
    """A suite's status from its jobs': queued while none has started, running until all have
    ended, then failed if one failed, else cancelled if one was cancelled, else succeeded."""
    if not statuses or all(status == QUEUED for status in statuses):
        return QUEUED
    if any(status not in FINISHED for status in statuses):
        return RUNNING
    if FAILED in statuses:
        return FAILED
    return CANCELLED if CANCELLED in statuses else SUCCEEDED


def refresh_status(suite: Suite) -> None:
    """Set the suite's status (and ``finished_at``, the last job's end) from its jobs'."""
    status = status_of([job.status for job in suite.jobs])
    if status != suite.status:
        suite.status = status
    if status in FINISHED and suite.finished_at is None:
        ends = [job.finished_at for job in suite.jobs if job.finished_at is not None]
        suite.finished_at = max(ends) if ends else None

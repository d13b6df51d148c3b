"""Run leases: the rules of who holds an unfinished run, shared by workers and reconciler.

A worker process holds the runs of the part it trains: it stamps them with its name
(``run.worker``, ``host:pid``: ``worker_name``) and the database's clock
(``run.heartbeat_at``) when it claims them, then every few seconds (``heartbeat_runs``; the
claim, the heartbeat thread and the release on shutdown are workers/leases.py). A stamp is
*fresh* from ``heartbeat_cutoff`` on, ``OPTBENCH_HEARTBEAT_TIMEOUT_SECONDS`` before now;
older, its holder is taken for gone. Both sides judge by ``is_fresh``:

- a delivery of a part leaves alone the runs another worker holds live
  (``held_by_live_worker``: running, fresh, named by another process that may be alive);
- the reconciler (services/reconcile.py) sends again the runs whose stamp is not fresh
  (``runs_to_check``), claiming each first (``claim_requeue``) and marking it
  ``REQUEUED_WORKER``: held by no worker until one takes the new message.

Torch-free: the API's reconciler imports it. Heartbeats and these checks use the database's
clock on PostgreSQL (``store.database_now``), so the machines' clocks need not agree.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from services.db.models import QUEUED, RUNNING, Job, Run, utcnow

# ``run.worker`` of a run the reconciler (or a stopping worker) sent to the queue again: no
# worker holds it until one takes the new message (and its heartbeat writes its ``host:pid``).
REQUEUED_WORKER = "(requeued)"


def worker_name() -> str:
    """``host:pid`` of this process, as stored in ``run.worker``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_cutoff(now: datetime, timeout_seconds: float) -> datetime:
    """The oldest stamp still fresh at ``now``: a holder stamped before it is taken for gone."""
    return now - timedelta(seconds=timeout_seconds)


def is_fresh(beat: datetime | None, cutoff: datetime) -> bool:
    """Whether a run stamped at ``beat`` counts as held at ``heartbeat_cutoff`` ``cutoff``."""
    return beat is not None and beat >= cutoff


def names_a_worker(worker: str | None) -> bool:
    """Whether ``run.worker`` names a worker process (not nobody, not a run sent again)."""
    return worker is not None and worker != REQUEUED_WORKER


def may_be_alive(worker: str | None) -> bool:
    """Whether the ``host:pid`` process may still be alive: on another host, trust its
    heartbeat; on this one, ask the kernel (a pool process killed a moment ago has a fresh
    heartbeat, and its redelivered task need not wait for the reconciler)."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def held_by_live_worker(run: Run, cutoff: datetime, me: str) -> bool:
    """Whether a worker other than ``me`` trains the run now: it is running, its stamp is
    fresh and names another process that may be alive. Such a run must not be trained twice
    at once (a duplicate delivery of its part leaves it alone)."""
    return (
        run.status == RUNNING
        and is_fresh(run.heartbeat_at, cutoff)
        and names_a_worker(run.worker)
        and run.worker != me
        and may_be_alive(run.worker)
    )


def heartbeat_runs(session: Session, run_ids: Collection[int], worker: str) -> int:
    """Stamp the unfinished runs among ``run_ids`` as alive now (the database's clock) and
    held by ``worker``; returns how many were stamped.

    PostgreSQL: rows another transaction has locked at this moment (the SQL sink advancing
    ``steps_done``) are skipped, not waited for: this statement then never waits and never
    takes part in a deadlock, and the next beat stamps them."""
    ids = sorted({int(run_id) for run_id in run_ids})
    if not ids:
        return 0
    alive = select(Run.id).where(Run.id.in_(ids), Run.status.in_((QUEUED, RUNNING)))
    now: Any = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        alive, now = alive.with_for_update(skip_locked=True), func.now()
    result = session.execute(
        update(Run)
        .where(Run.id.in_(alive))
        .values(heartbeat_at=now, worker=worker)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class OpenRun:
    """An unfinished run of a running job, as the reconciler saw it."""

    id: int
    job_id: uuid.UUID
    status: str
    heartbeat_at: datetime | None
    worker: str | None


def runs_to_check(session: Session, cutoff: datetime, waited_before: datetime) -> list[OpenRun]:
    """Unfinished runs of running jobs that may have lost their worker or their message:
    a stamp older than ``heartbeat_cutoff`` ``cutoff`` (not fresh); or none at all, queued
    since the job started before ``waited_before``; or sent again before ``waited_before``.
    Running runs without any heartbeat (a worker that does not beat) are not listed."""
    never_taken = (Run.heartbeat_at.is_(None)) & (Run.status == QUEUED)
    query = (
        select(Run.id, Run.job_id, Run.status, Run.heartbeat_at, Run.worker)
        .join(Job, Run.job_id == Job.id)
        .where(Job.status == RUNNING, Run.status.in_((QUEUED, RUNNING)))
        .where(
            (Run.heartbeat_at < cutoff)  # not ``is_fresh``
            | (never_taken & (Job.started_at < waited_before))
            | ((Run.worker == REQUEUED_WORKER) & (Run.heartbeat_at < waited_before))
        )
        .order_by(Run.id)
    )
    return [OpenRun(*row) for row in session.execute(query)]


def _as_seen(run: OpenRun) -> Any:
    """The run's row exactly as the reconciler saw it: open, of a running job."""
    heartbeat = (
        Run.heartbeat_at.is_(None)
        if run.heartbeat_at is None
        else Run.heartbeat_at == run.heartbeat_at
    )
    worker = Run.worker.is_(None) if run.worker is None else Run.worker == run.worker
    job_running = select(Job.id).where(Job.id == Run.job_id, Job.status == RUNNING).exists()
    return (Run.id == run.id) & (Run.status == run.status) & heartbeat & worker & job_running


def claim_requeue(session: Session, run: OpenRun, now: datetime) -> bool:
    """Record that this caller sends ``run`` to the queue again now, if its row is still as
    it was seen (same status, heartbeat and worker; job still running): a compare-and-set,
    so that of two reconcilers at once one sends it, and a run whose worker beat meanwhile
    is left alone. Marks it ``REQUEUED_WORKER``, its heartbeat ``now``."""
    result = session.execute(
        update(Run)
        .where(_as_seen(run))
        .values(heartbeat_at=now, worker=REQUEUED_WORKER)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def release_requeue(session: Session, run: OpenRun, claimed_at: datetime) -> None:
    """Undo ``claim_requeue`` (the broker did not take the message) unless a worker has
    stamped the run since: the next pass finds it as it was."""
    claimed = OpenRun(run.id, run.job_id, run.status, claimed_at, REQUEUED_WORKER)
    session.execute(
        update(Run)
        .where(_as_seen(claimed))
        .values(heartbeat_at=run.heartbeat_at, worker=run.worker)
        .execution_options(synchronize_session=False)
    )

"""Nothing lost at submission: send queued jobs whose task the broker does not hold.

The API stores a job, commits, then hands its task to the broker (services/jobs.py). If the
broker is down at that moment the job stays ``queued`` with ``enqueued_at`` NULL, and the
client still gets its 202. ``reconcile`` sends such jobs once the broker takes messages
again, and also jobs sent more than ``OPTBENCH_RECONCILE_GRACE_SECONDS`` ago whose message
the broker no longer holds, neither waiting nor delivered to a worker (Redis only: other
transports cannot say, so there a job the broker took is trusted to it).

Each send is claimed first (``store.claim_enqueue``, a compare-and-set on ``enqueued_at``),
so that several API processes reconciling at once send a job once; ``enqueue_attempts``
counts the sends. A job is never sent while its message is waiting or being worked on, so
the queue does not fill with copies. Should a copy still reach a worker (a message taken by a
worker between the two looks below), ``execute_job`` skips a finished job and a redelivered
planning task trains only runs that have not finished.

Where it runs: in the API process every ``OPTBENCH_RECONCILE_INTERVAL_SECONDS``
(``run_forever``, started by the app's lifespan), and once with ``optbench reconcile``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from anyio import to_thread

from services.db import store
from services.db.models import utcnow
from services.db.session import unit_of_work
from services.queue import enqueue_job, jobs_in_broker
from services.settings import get_settings

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    """What one pass did: jobs sent, and whether the broker refused (the rest wait)."""

    sent: list[uuid.UUID] = field(default_factory=list)
    broker_down: bool = False


def reconcile(
    now: datetime | None = None,
    *,
    send: Callable[[uuid.UUID], None] = enqueue_job,
    held: Callable[[], set[str] | None] = jobs_in_broker,
) -> Reconciled:
    """One pass: send every queued job the broker never took, and every job sent before
    ``now`` minus the grace period whose message the broker has lost."""
    now = now or utcnow()
    grace = timedelta(seconds=get_settings().reconcile_grace_seconds)
    with unit_of_work() as session:
        candidates = store.queued_jobs_to_check(session, now - grace)
    unsent = [(job_id, seen) for job_id, seen in candidates if seen is None]
    lost = _lost([(job_id, seen) for job_id, seen in candidates if seen is not None], held)
    result = Reconciled()
    for job_id, seen in unsent + lost:
        with unit_of_work() as session:
            if not store.claim_enqueue(session, job_id, seen, now):
                continue  # started, or sent by another process meanwhile
        try:
            send(job_id)
        except Exception as error:
            log.warning("job %s: the broker is still down (%s)", job_id, type(error).__name__)
            with unit_of_work() as session:
                store.mark_not_enqueued(session, job_id)
            result.broker_down = True
            break  # the others wait for the next pass
        log.info("job %s sent to the broker (%s)", job_id, "lost" if seen else "never sent")
        result.sent.append(job_id)
    return result


def _lost(
    sent: list[tuple[uuid.UUID, datetime | None]], held: Callable[[], set[str] | None]
) -> list[tuple[uuid.UUID, datetime | None]]:
    """The jobs among ``sent`` whose message the broker holds in neither of two looks (a
    worker takes a message from the queue, then records it as unacknowledged: one look could
    fall in between)."""
    if not sent:
        return []
    try:
        first = held()
        missing = [job for job in sent if first is not None and str(job[0]) not in first]
        if not missing:
            return []
        second = held()
    except Exception as error:
        log.warning("cannot read the broker's queue (%s)", type(error).__name__)
        return []
    return [job for job in missing if second is not None and str(job[0]) not in second]


def reconcile_quietly() -> Reconciled:
    """``reconcile``, with the database's absence logged rather than raised."""
    try:
        return reconcile()
    except Exception as error:
        log.warning("reconcile skipped: %s", type(error).__name__)
        return Reconciled()


async def run_forever(interval: float) -> None:
    """Reconcile now and then every ``interval`` seconds, off the event loop, until cancelled."""
    while True:
        await to_thread.run_sync(reconcile_quietly)
        await asyncio.sleep(interval)

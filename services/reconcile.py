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

Runs of running jobs (``_requeue_runs``), once the queued jobs are sent. A worker stamps the
runs of the part it trains every ``OPTBENCH_HEARTBEAT_SECONDS`` (workers/leases.py:
``run.heartbeat_at``, ``run.worker``). Sent again, as one ``run_job_part`` per job and worker
(one torch thread), are (the lease rules: services/db/leases.py):

- *vanished* runs: unfinished, with a heartbeat older than ``OPTBENCH_HEARTBEAT_TIMEOUT_SECONDS``
  (default 6 heartbeats, 60 s; not ``leases.is_fresh``). Their worker died without the
  broker redelivering the part (the filesystem broker forgets a message once read; Redis
  keeps a dead worker's message unacknowledged for its visibility timeout, a week). Any
  broker. Under Redis a run whose part message waits in the queue again, or whose job's
  planning message waits, is left to that message. Running runs without any heartbeat (a
  worker that does not beat) are never taken for vanished.
- *lost* runs (Redis only: other brokers cannot say): queued runs that no worker has taken
  (no heartbeat), of a job started more than ``OPTBENCH_RECONCILE_GRACE_SECONDS`` ago, and
  runs this reconciler sent again that long ago and no worker took since, whose part message
  the broker holds in neither of two looks, waiting or unacknowledged (e.g. Redis restarted
  without its data), and whose job's planning message is not waiting either.

Each run is claimed first (``leases.claim_requeue``: a compare-and-set on its status,
``heartbeat_at`` and ``worker``, which become now and ``leases.REQUEUED_WORKER``), so that two
reconcilers send it once and a run whose worker beats meanwhile is left alone. A run sent
again is not sent again while it waits for a worker, until its new message is lost (Redis)
or a worker took it and vanished in turn: a busy queue does not fill with copies. Should a
copy still reach a worker, ``execute_part`` skips runs that finished. Heartbeats and these
checks use the database's clock on PostgreSQL, so the machines' clocks need not agree.

Where it runs: in the API process every ``OPTBENCH_RECONCILE_INTERVAL_SECONDS``
(``run_forever``, started by the app's lifespan), and once with ``optbench reconcile``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from anyio import to_thread

from services.db import leases, store
from services.db.leases import REQUEUED_WORKER, OpenRun
from services.db.models import utcnow
from services.db.session import unit_of_work
from services.queue import RunsInBroker, enqueue_job, enqueue_part, jobs_in_broker, runs_in_broker
from services.settings import Settings, get_settings

log = logging.getLogger(__name__)


# Why runs were sent again.
VANISHED = "vanished"  # their worker stopped beating
LOST = "lost"  # queued, and the broker holds no message of theirs

# Sends one part of a running job: (job id, run ids, threads, part number, number of parts).
SendPart = Callable[[str, list[int], int, int, int], None]


@dataclass
class Requeued:
    """Runs of a running job sent to the queue again as one part, and why: ``VANISHED``
    (``worker``, ``host:pid``, stopped beating) or ``LOST``."""

    job: uuid.UUID
    runs: list[int]
    reason: str
    worker: str | None = None


@dataclass
class Reconciled:
    """What one pass did: jobs sent, runs sent again, and whether the broker refused (the
    rest wait)."""

    sent: list[uuid.UUID] = field(default_factory=list)
    broker_down: bool = False
    requeued: list[Requeued] = field(default_factory=list)
    finalised: list[uuid.UUID] = field(default_factory=list)  # sent to a worker to finalise


def reconcile(
    now: datetime | None = None,
    *,
    send: Callable[[uuid.UUID], None] = enqueue_job,
    held: Callable[[], set[str] | None] = jobs_in_broker,
    send_part: SendPart = enqueue_part,
    runs_held: Callable[[], RunsInBroker | None] = runs_in_broker,
) -> Reconciled:
    """One pass: send every queued job the broker never took, and every job sent before
    ``now`` minus the grace period whose message the broker has lost; then send again the
    runs of running jobs that lost their worker or their message (``_requeue_runs``).
    ``now``: this machine's clock for jobs, the database's for runs, unless given."""
    settings = get_settings()
    result = _send_jobs(now or utcnow(), settings, send, held)
    if not result.broker_down:
        _requeue_runs(now, settings, send_part, runs_held, result)
    if not result.broker_down:
        _finalise_stranded(now, settings, send_part, result)
    return result


def _finalise_stranded(
    now: datetime | None, settings: Settings, send_part: SendPart, result: Reconciled
) -> None:
    """Running jobs whose runs have all ended, the last over the grace period ago, and that no
    part finalised (its worker died between its last run's end and the job's): a part with no
    runs makes a worker finalise them (``execute_part`` finalises under the job's lock, once,
    however many such parts arrive)."""
    with unit_of_work() as session:
        now = now or store.database_now(session)
        before = now - timedelta(seconds=settings.reconcile_grace_seconds)
        stranded = store.stranded_jobs(session, before)
    for job_id in stranded:
        try:
            send_part(str(job_id), [], 1, 0, 0)
        except Exception as error:
            log.warning("job %s: the broker is down (%s)", job_id, type(error).__name__)
            result.broker_down = True
            return
        log.warning(
            "job %s: every run ended but the job was not finalised; sent to finalise", job_id
        )
        result.finalised.append(job_id)


def _send_jobs(
    now: datetime,
    settings: Settings,
    send: Callable[[uuid.UUID], None],
    held: Callable[[], set[str] | None],
) -> Reconciled:
    grace = timedelta(seconds=settings.reconcile_grace_seconds)
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


def _requeue_runs(
    now: datetime | None,
    settings: Settings,
    send_part: SendPart,
    runs_held: Callable[[], RunsInBroker | None],
    result: Reconciled,
) -> None:
    """Send again the vanished and the lost runs of running jobs (see the module), one part
    per job and worker; adds them to ``result``."""
    with unit_of_work() as session:
        now = now or store.database_now(session)
        waited_before = now - timedelta(seconds=settings.reconcile_grace_seconds)
        cutoff = leases.heartbeat_cutoff(now, settings.heartbeat_timeout)
        candidates = leases.runs_to_check(session, cutoff, waited_before)
    vanished, lost = [], []
    for run in candidates:
        if run.worker == REQUEUED_WORKER or run.heartbeat_at is None:
            if run.heartbeat_at is None or run.heartbeat_at < waited_before:
                lost.append(run)
        elif not leases.is_fresh(run.heartbeat_at, cutoff):
            vanished.append(run)
    if not vanished and not lost:
        return
    try:
        vanished, lost = _not_in_broker(vanished, lost, runs_held)
    except Exception as error:
        log.warning("cannot read the broker's queue (%s)", type(error).__name__)
        return
    groups: dict[tuple[uuid.UUID, str, str | None], list[OpenRun]] = defaultdict(list)
    for run in vanished:
        groups[(run.job_id, VANISHED, run.worker)].append(run)
    for run in lost:
        groups[(run.job_id, LOST, None)].append(run)
    for (job_id, reason, worker), runs in sorted(groups.items(), key=lambda item: item[1][0].id):
        claimed = []
        for run in runs:  # one row per transaction: a claim never waits holding a lock
            with unit_of_work() as session:
                if leases.claim_requeue(session, run, now):
                    claimed.append(run)
        if not claimed:
            continue  # a worker beat, or another process sent them, meanwhile
        run_ids = [run.id for run in claimed]
        try:
            send_part(str(job_id), run_ids, 1, 0, 0)
        except Exception as error:
            log.warning("job %s: the broker is down (%s)", job_id, type(error).__name__)
            for run in claimed:
                with unit_of_work() as session:
                    leases.release_requeue(session, run, now)
            result.broker_down = True
            return  # the others wait for the next pass
        if reason == VANISHED:
            log.warning(
                "job %s: runs %s sent again: their worker %s stopped beating (last %s)",
                job_id,
                run_ids,
                worker,
                max(run.heartbeat_at for run in claimed if run.heartbeat_at is not None),
            )
        else:
            log.warning("job %s: runs %s sent again: the broker lost their part", job_id, run_ids)
        result.requeued.append(Requeued(job_id, run_ids, reason, worker))


def _not_in_broker(
    vanished: list[OpenRun], lost: list[OpenRun], runs_held: Callable[[], RunsInBroker | None]
) -> tuple[list[OpenRun], list[OpenRun]]:
    """Of the vanished runs, those the broker is not redelivering (their part message, or
    their job's planning message, waits in the queue); of the lost ones, those whose message
    the broker holds in neither of two looks (a worker takes a message from the queue, then
    records it as unacknowledged: one look could fall in between). A broker that cannot say
    (None): every vanished run, and no lost one."""
    first = runs_held()
    if first is None:
        return vanished, []
    looks = [first]
    missing = [run for run in lost if _lost_in(run, first)]
    if missing:
        second = runs_held()
        if second is None:
            return [run for run in vanished if not _redelivered_in(run, first)], []
        looks.append(second)
        missing = [run for run in missing if _lost_in(run, second)]
    vanished = [run for run in vanished if not any(_redelivered_in(run, look) for look in looks)]
    return vanished, missing


def _lost_in(run: OpenRun, look: RunsInBroker) -> bool:
    return run.id not in look.held and str(run.job_id) not in look.planning


def _redelivered_in(run: OpenRun, look: RunsInBroker) -> bool:
    return run.id in look.waiting or str(run.job_id) in look.planning


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

"""Retention of finished jobs: ``OPTBENCH_JOB_RETENTION_DAYS`` (off by default, 0).

With it set, each API process sweeps on start and then every ``SWEEP_SECONDS`` (an hour),
off the event loop: the jobs that finished (succeeded, failed or cancelled) more than that
many days ago are deleted with their runs, metrics, rollups and checkpoints, each job in its
own transaction (``services.jobs.delete``), oldest first. Queued and running jobs are never
swept, whatever their age, nor uploaded data sets (``DELETE /v1/datasets/{id}`` deletes
those). A job whose workers are still stopping is left for the next sweep. Several API
processes may sweep at once: each job's row lock makes one of them delete it, the others
find it gone.

Decided here: a sweep in the API rather than a worker's periodic task (the worker pool
keeps its processes for training, and the API already runs the reconciler the same way),
on start so that a service restarted after a long pause catches up at once, and hourly
because the setting counts days.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from services import jobs
from services.db import store
from services.db.models import utcnow
from services.db.session import unit_of_work
from services.errors import Conflict, NotFound
from services.settings import get_settings

log = logging.getLogger(__name__)

SWEEP_SECONDS = 3600.0
BATCH = 100  # jobs listed per query: a sweep that catches up on months goes in batches


def sweep(now: datetime | None = None) -> list[uuid.UUID]:
    """Delete the finished jobs past the retention; returns their ids (none when it is off)."""
    days = get_settings().job_retention_days
    if days <= 0:
        return []
    cutoff = (now or utcnow()) - timedelta(days=days)
    deleted: list[uuid.UUID] = []
    skipped: set[uuid.UUID] = set()
    while True:
        with unit_of_work() as session:
            batch = store.expired_jobs(session, cutoff, BATCH + len(skipped))
        todo = [job_id for job_id in batch if job_id not in skipped]
        if not todo:
            break
        for job_id in todo:
            try:
                jobs.delete(job_id)
            except NotFound:  # another API process deleted it first
                continue
            except Conflict:  # its workers are still stopping: the next sweep
                skipped.add(job_id)
                continue
            deleted.append(job_id)
    if deleted:
        log.info("retention: %d finished jobs older than %g days deleted", len(deleted), days)
    return deleted


def sweep_quietly() -> list[uuid.UUID]:
    """``sweep``, an error logged (by class only) instead of raised: the loop goes on."""
    try:
        return sweep()
    except Exception as error:
        log.warning("retention sweep failed (%s); trying again later", type(error).__name__)
        return []


async def run_forever(interval: float = SWEEP_SECONDS) -> None:
    """Sweep now and then every ``interval`` seconds, off the event loop, until cancelled."""
    while True:
        await asyncio.to_thread(sweep_quietly)
        await asyncio.sleep(interval)

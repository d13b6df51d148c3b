"""Long-polling a job: ``GET /v1/jobs/{id}?wait=SECONDS`` answers when the job has changed.

A client that polls on its own sees a job's end up to one polling interval late (the demo's
half second was most of a small job's time after its training). With ``wait`` the API holds
the request instead and answers as soon as the job's status or a run's status or steps
differ from what they were when the request came (or at once for a job that has ended), or
with the current state once ``wait`` seconds have passed. The client asks again straight
away (services/client.py ``ApiClient.wait``), so it sees every change within ``POLL_SECONDS``
of the worker committing it, and no request waits for nothing.

The API checks the database every ``POLL_SECONDS`` (two small queries on the job and its
runs) in its thread pool, between checks it awaits without holding a thread, so waiting
clients cost no threads. ``MAX_WAIT_SECONDS`` bounds one request (proxies cut idle
connections after a minute or so; the client simply asks again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from services.db.models import FINISHED, Job

MAX_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.02

T = TypeVar("T")


def job_state(job: Job) -> Hashable:
    """What a waiting client is told about when it changes: the job's status and each run's
    status and steps (steps done add up to the progress)."""
    return job.status, tuple((run.id, run.status, run.steps_done) for run in job.runs)


def job_ended(job: Job) -> bool:
    return job.status in FINISHED


async def wait_for_change(
    load: Callable[[], T],
    seconds: float,
    *,
    state: Callable[[T], Hashable],
    ended: Callable[[T], bool],
    poll: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``load()`` (a blocking call, run in the thread pool) again every ``poll`` seconds
    until ``state`` differs from the first load's, or ``ended`` holds, or ``seconds`` have
    passed; the last value loaded. The first load's errors (a 404) come at once."""
    current = await run_in_threadpool(load)
    if seconds <= 0 or ended(current):
        return current
    seen = state(current)
    deadline = clock() + min(seconds, MAX_WAIT_SECONDS)
    while (left := deadline - clock()) > 0:
        await sleep(min(poll, left))
        current = await run_in_threadpool(load)
        if ended(current) or state(current) != seen:
            return current
    return current

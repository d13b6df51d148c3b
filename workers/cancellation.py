"""Cancellation: a training part stops at the flush after its job was cancelled.

``POST /v1/jobs/{id}/cancel`` marks the job and its unfinished runs ``cancelled`` in the
database (services/db/store.py ``cancel_job``). Each part's hooks include ``CancellationCheck``
after the SQL sink: at a flush (every ``OPTBENCH_FLUSH_EVERY_STEPS`` steps and each epoch
end), once that flush's rows are handed to the sink, it reads the job's status (one small
query) and raises ``JobCancelled`` when it is ``cancelled``; the part then stores what it has
and ends without failing the job.

It reads the status at the first flush ``CHECK_EVERY_SECONDS`` after the part began or after
its last read, not at every flush: a small job flushes at every epoch end, and one query per
flush was an eighth of the lecture job's time at 20 epochs (40 queries, 0.24 s of 2 s, by
benchmarks/bench_small_job.py's profile on the loaded 2-core VM). A cancellation is seen
within that quarter of a second plus one flush; a part that starts after its job was
cancelled trains nothing (workers/execution.py checks before it trains).

While the database cannot be reached (services/db/transient.py) the check is skipped, with
one warning per outage: the training goes on, its rows wait in the SQL sink, which retries
them, and the next flush after the database is back checks again. Any other error is raised.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence

from services.db import store
from services.db.models import CANCELLED
from services.db.session import unit_of_work
from services.db.transient import describe, is_transient
from workers.engine import Hooks, RunConfig, StepColumns

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 0.25  # at most one status read per part in this long (see above)


class JobCancelled(Exception):
    """The job was cancelled while this part trained it."""


class CancellationCheck(Hooks):
    def __init__(
        self,
        job_id: uuid.UUID,
        *,
        every_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_id = job_id
        self.unreachable = False  # the last check found the database away
        self.every = CHECK_EVERY_SECONDS if every_seconds is None else every_seconds
        self.clock = clock
        self.checked = clock()  # the part was checked before it began to train
        self.checks = 0  # statuses read

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        now = self.clock()
        if now - self.checked < self.every:
            return
        self.checked = now
        self.checks += 1
        try:
            with unit_of_work() as session:
                cancelled = store.job_status(session, self.job_id) == CANCELLED
        except Exception as error:
            if not is_transient(error):
                raise
            if not self.unreachable:
                log.warning(
                    "job %s: cancellation not checked, the database cannot be reached (%s); "
                    "training goes on",
                    self.job_id,
                    describe(error),
                )
            self.unreachable = True
            return
        self.unreachable = False
        if cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled")

"""Cancellation: a training part stops at the flush after its job was cancelled.

``POST /v1/jobs/{id}/cancel`` marks the job and its unfinished runs ``cancelled`` in the
database (services/db/store.py ``cancel_job``). Each part's hooks include ``CancellationCheck``
after the SQL sink: at every flush (every ``OPTBENCH_FLUSH_EVERY_STEPS`` steps and each epoch
end), once that flush's rows are handed to the sink, it reads the job's status (one small
query) and raises ``JobCancelled`` when it is ``cancelled``; the part then stores what it has
and ends without failing the job.

While the database cannot be reached (services/db/transient.py) the check is skipped, with
one warning per outage: the training goes on, its rows wait in the SQL sink, which retries
them, and the next flush after the database is back checks again. Any other error is raised.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from services.db import store
from services.db.models import CANCELLED
from services.db.session import unit_of_work
from services.db.transient import describe, is_transient
from workers.engine import Hooks, RunConfig, StepColumns

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """The job was cancelled while this part trained it."""


class CancellationCheck(Hooks):
    def __init__(self, job_id: uuid.UUID) -> None:
        self.job_id = job_id
        self.unreachable = False  # the last check found the database away

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
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

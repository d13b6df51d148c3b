"""Cancellation: a training part stops at the flush after its job was cancelled.

``POST /v1/jobs/{id}/cancel`` marks the job and its unfinished runs ``cancelled`` in the
database (services/db/store.py ``cancel_job``). Each part's hooks include ``CancellationCheck``
after the SQL sink: at every flush (every ``OPTBENCH_FLUSH_EVERY_STEPS`` steps and each epoch
end), once that flush's rows are handed to the sink, it reads the job's status (one small
query) and raises ``JobCancelled`` when it is ``cancelled``; the part then stores what it has
and ends without failing the job.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.db import store
from services.db.models import CANCELLED
from services.db.session import unit_of_work
from workers.engine import Hooks, RunConfig, StepRecord


class JobCancelled(Exception):
    """The job was cancelled while this part trained it."""


class CancellationCheck(Hooks):
    def __init__(self, job_id: uuid.UUID) -> None:
        self.job_id = job_id

    def on_flush(self, batch: Sequence[tuple[RunConfig, Sequence[StepRecord]]]) -> None:
        with unit_of_work() as session:
            cancelled = store.job_status(session, self.job_id) == CANCELLED
        if cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled")

"""Wall-time limits: a job fails, with the reason, once it has run ``OPTBENCH_MAX_JOB_SECONDS``
since it started, or once one of its parts has run ``OPTBENCH_MAX_PART_SECONDS``.

Why both: the part limit bounds how long one task holds a worker process, hence how long
another owner's job can wait for one (dispatch is fair at the granularity of a part:
services/fairness.py); the job limit bounds the whole job, parts waiting for a worker
included (the wall time its owner sees).

Where they are checked: when a part starts (a part that waited in the queue past its job's
limit trains nothing) and at each flush of its training (``TimeLimitCheck``, a hook after
the SQL sink: that flush's rows are stored first), every ``OPTBENCH_FLUSH_EVERY_STEPS``
steps and each epoch end, so a limit is noticed within one flush interval. The part's clock
starts when its task does (loading the data included); the job's is its ``started_at``,
read against the database's clock once, when the part starts, then followed with this
process's monotonic clock (no two machines' clocks are compared while it trains).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from workers.engine import Hooks, RunConfig, StepColumns


class TimeLimitExceeded(Exception):
    """The job or the part ran past its wall-time limit; the message says which and what
    to change."""


@dataclass(frozen=True)
class Deadlines:
    """When (``time.monotonic()``) the part and its job must have ended, and what for."""

    job: str  # "job <id>"
    part: str  # "part 2/3"
    part_started: float
    part_limit: float
    job_started: float  # on this process's monotonic clock, from the job's started_at
    job_limit: float

    def check(self, now: float | None = None) -> None:
        """Raise TimeLimitExceeded when either limit has passed."""
        now = time.monotonic() if now is None else now
        in_part, in_job = now - self.part_started, now - self.job_started
        if in_job > self.job_limit:
            raise TimeLimitExceeded(
                f"{self.job} ran for {in_job:,.0f} s, over its wall-time limit of "
                f"{self.job_limit:,g} s (OPTBENCH_MAX_JOB_SECONDS): use fewer runs, epochs or "
                "samples, or split the comparison into several jobs"
            )
        if in_part > self.part_limit:
            raise TimeLimitExceeded(
                f"{self.part} of {self.job} ran for {in_part:,.0f} s, over the wall-time limit "
                f"of {self.part_limit:,g} s per part (OPTBENCH_MAX_PART_SECONDS): use fewer "
                "epochs or samples, or more parts (OPTBENCH_JOB_PARTS)"
            )


class TimeLimitCheck(Hooks):
    """At each flush: stop the part once its job or itself has run too long."""

    def __init__(self, deadlines: Deadlines) -> None:
        self.deadlines = deadlines

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        self.deadlines.check()

"""Fair shares of the workers between owners: each task goes to the broker with its owner's
*rank*, and the broker hands out lower ranks first (services/queue.py maps a rank to the
broker's message priority).

A task's rank is how much of its owner's work is already ahead of it when it is sent:

- a job's planning task (``run_job``, which also trains part 1): the owner's other jobs that
  are queued or running;
- part ``k`` of ``P`` (``run_job_part``, k >= 2): that, plus the ``k - 1`` parts of its own
  job sent before it (part 1 included); a part the reconciler sends again (part 0) ranks as
  its job's planning task.

So the free worker takes the task of the owner with the least work ahead of it: every owner's
first task before anyone's second, and so on, i.e. round-robin over the owners with queued
work, at the granularity of a part. One owner with several long jobs holds the workers only
until one of its parts ends; another owner's job is taken next (tests/integration/
test_fairness.py measures it). Within one rank the queue stays first in, first out.

Why ranks rather than per-owner queues: the broker's own priorities do the interleaving, so
there is no scheduler of ours, no queue to declare per owner and nothing for workers to
subscribe to as owners come and go. What it costs: one indexed count per task sent (the
owner's jobs in flight; 4.6 ms a send on PostgreSQL with 2,000 jobs stored, measured on the
2-core VM under a load of 12, beside 1.5 ms for the send itself), and ranks are fixed when a
task is sent (an owner whose earlier
tasks ran meanwhile keeps the ranks it had). Ranks above ``MAX_RANK`` are ``MAX_RANK``: past
that many tasks ahead, an owner's tasks are first in, first out with other owners' at the
cap. Brokers without priorities (the embedded default's filesystem broker, one machine and
usually one owner) keep one FIFO queue.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select

from services.db.models import QUEUED, RUNNING, Job
from services.db.session import unit_of_work
from services.db.transient import describe

log = logging.getLogger(__name__)

# Kombu's Redis transport keeps one list per priority step; 0-9 are the priorities it knows.
MAX_RANK = 9


def job_rank(job_id: uuid.UUID | str) -> int:
    """The owner's other jobs queued or running, besides ``job_id`` (capped at MAX_RANK)."""
    key = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    owner = select(Job.owner).where(Job.id == key).scalar_subquery()
    query = (
        select(func.count())
        .select_from(Job)
        .where(Job.owner == owner, Job.status.in_((QUEUED, RUNNING)), Job.id != key)
    )
    with unit_of_work() as session:
        return min(int(session.scalar(query) or 0), MAX_RANK)


def task_rank(job_id: uuid.UUID | str, part: int = 1) -> int:
    """The rank of part ``part`` of the job (1: its planning task; 0: a part sent again by
    the reconciler, ranked as 1). The database away: rank 0, with a warning (the task is
    still sent; fairness is a preference, never a reason to lose a task)."""
    try:
        ahead = job_rank(job_id)
    except Exception as error:
        log.warning("job %s: owner's rank unknown (%s); sent with rank 0", job_id, describe(error))
        return 0
    return min(ahead + max(part - 1, 0), MAX_RANK)

"""A part's run leases: which of its runs it trains, holding them, handing them back.

The rules (what a fresh stamp and a live holder are, the reconciler's side) are
services/db/leases.py; this is the worker's side, used by workers/execution.py:

- ``claim``, under the job's row lock: of the part's unfinished runs, those a live worker
  holds are left to it (a duplicate delivery must not train them twice at once); each other
  counts an attempt and is stamped as held by this process, unless it was started
  ``OPTBENCH_MAX_ATTEMPTS`` times already (it keeps killing its workers: ``GaveUp``).
- ``Heartbeat(run_ids, interval)`` wraps the training. On enter it stamps the runs
  (``run.heartbeat_at``, the database's clock; ``run.worker``, ``host:pid``) at once (not
  with ``stamped``: ``claim`` stamped them just now, in the part's claiming transaction),
  then every ``interval`` seconds from a daemon thread, each time in a short transaction of its
  own; on exit the thread stops, and no stamp is written after ``__exit__`` has returned. A
  run that finished is no longer stamped. The reconciler sends again the runs of a running
  job whose stamp is no longer fresh: their worker is gone (killed, its machine lost) and the
  broker did not redeliver their part. A stamp that fails (the database away for a moment) is
  logged and tried again at the next tick; it is never raised into the training. The
  training's own writes say soon enough if the database stays away.
- ``release``: a worker shutting down hands its runs back (workers/shutdown.py); the attempt
  does not count.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from types import TracebackType

from sqlalchemy.orm import Session

from services.db import leases as db_leases
from services.db import store
from services.db.models import FINISHED, Job
from services.db.session import unit_of_work
from services.db.transient import describe
from services.settings import Settings

log = logging.getLogger(__name__)


class GaveUp(Exception):
    """A run was started ``max_attempts`` times and never finished."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


@dataclass
class Claim:
    """What ``claim`` found of a part's unfinished runs."""

    todo: list[int] = field(default_factory=list)  # this part trains them, stamped as held
    held: list[int] = field(default_factory=list)  # a live worker holds them: not here
    given_up: list[tuple[int, str]] = field(default_factory=list)  # (run, why), failed


def claim(session: Session, job: Job, wanted: set[int], settings: Settings) -> Claim:
    """Under the job's lock: which of the wanted unfinished runs this part trains, which a
    live worker holds, and which gave up (started ``max_attempts`` times already, with why).
    Each run this part takes counts an attempt and is stamped as held by this worker."""
    now, me = store.database_now(session), db_leases.worker_name()
    cutoff = db_leases.heartbeat_cutoff(now, settings.heartbeat_timeout)
    found = Claim()
    for run in job.runs:
        if run.id not in wanted or run.status in FINISHED:
            continue
        if db_leases.held_by_live_worker(run, cutoff, me):
            found.held.append(run.id)
            continue
        run.attempts += 1
        if run.attempts > settings.max_attempts:
            found.given_up.append(
                (
                    run.id,
                    f"gave up after {settings.max_attempts} attempts: each time, the worker "
                    f"training run {run.id} ({run.label}) stopped before it finished "
                    f"(last: {run.worker or 'unknown'})",
                )
            )
            continue
        run.heartbeat_at, run.worker = now, me
        found.todo.append(run.id)
    return found


def release(job_key: uuid.UUID, run_ids: list[int]) -> None:
    """A stopping worker hands its runs back: the attempt does not count, and the runs are
    marked as sent to the queue again (the reconciler resends them should that send fail)."""
    with unit_of_work() as session:
        job = store.lock_job(session, job_key)
        now = store.database_now(session)
        for run in job.runs:
            if run.id in run_ids and run.status not in FINISHED:
                run.attempts = max(run.attempts - 1, 0)
                run.heartbeat_at, run.worker = now, db_leases.REQUEUED_WORKER


class Heartbeat:
    """Stamp ``run_ids`` as alive while the ``with`` block runs (see the module)."""

    def __init__(
        self,
        run_ids: Collection[int],
        interval: float,
        *,
        worker: str | None = None,
        stamped: bool = False,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be positive, not {interval}")
        self.run_ids = sorted({int(run_id) for run_id in run_ids})
        self.interval = float(interval)
        self.worker = worker or db_leases.worker_name()
        self.stamped = stamped  # just stamped (claim): the first beat after one interval
        self.beats = 0  # stamps written
        self.failures = 0  # stamps that failed
        self._lock = threading.Lock()  # held while a stamp is written
        self._stopped = False
        self._failing = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if not self.run_ids:
            return self
        if not self.stamped:
            self._beat()
        self._thread = threading.Thread(target=self._loop, name="optbench-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop beating: waits for a stamp being written, and for the thread to end."""
        with self._lock:
            self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._wake.wait(self.interval):
            self._beat()

    def _beat(self) -> None:
        with self._lock:
            if self._stopped:
                return
            try:
                with unit_of_work() as session:
                    db_leases.heartbeat_runs(session, self.run_ids, self.worker)
            except Exception as error:  # never into the training: the next tick tries again
                self.failures += 1
                self._failing = True
                log.warning(  # the class and SQLSTATE only: a message can name the host
                    "heartbeat of runs %s failed (%s); trying again in %g s",
                    self.run_ids,
                    describe(error),
                    self.interval,
                )
                return
            if self._failing:
                log.info("heartbeat of runs %s written again", self.run_ids)
                self._failing = False
            self.beats += 1

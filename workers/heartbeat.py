"""Liveness of a training part: its runs are stamped as alive every few seconds.

``Heartbeat(run_ids, interval)`` wraps the training of a part (workers/execution.py). On
enter it stamps the part's unfinished runs with ``run.heartbeat_at`` (the database's clock)
and ``run.worker`` (``host:pid`` of this process) at once, then again every ``interval``
seconds from a daemon thread, each time in a short transaction of its own; on exit the
thread stops, and no stamp is written after ``__exit__`` has returned. A run that finished
is no longer stamped. The reconciler (services/reconcile.py) sends again the runs of a
running job whose stamp is no longer fresh (services/db/leases.py): their worker is gone
(killed, its machine lost) and the broker did not redeliver their part.

A stamp that fails (the database away for a moment) is logged and tried again at the next
tick; it is never raised into the training. The training's own writes say soon enough if
the database stays away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from types import TracebackType

from services.db import leases
from services.db.leases import worker_name
from services.db.session import unit_of_work
from services.db.transient import describe

log = logging.getLogger(__name__)


class Heartbeat:
    """Stamp ``run_ids`` as alive while the ``with`` block runs (see the module)."""

    def __init__(
        self, run_ids: Collection[int], interval: float, *, worker: str | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be positive, not {interval}")
        self.run_ids = sorted({int(run_id) for run_id in run_ids})
        self.interval = float(interval)
        self.worker = worker or worker_name()
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
                    leases.heartbeat_runs(session, self.run_ids, self.worker)
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

"""The SQL sink's batching writer: a bounded queue, and one thread that empties it.

The training thread hands items to ``put`` and goes on; the writer thread takes everything
queued (up to ``max_batch_rows`` rows, at least one item) and hands it to ``write`` in one
call, which the SQL sink makes one transaction. That is the point: a commit, its round trips
and its fixed client work are paid a few times a second instead of once per engine flush
(docs/performance.md, "Storing every step").

- Lingering: the writer waits up to ``linger`` seconds after the first queued item for more,
  unless a write is due: someone waits (``wait``), ``max_batch_rows`` rows are queued, a
  producer is blocked on a full queue, or the writer is stopping.
- Backpressure: with ``max_pending_rows`` rows queued, ``put`` waits for the writer instead
  of queueing more (an item larger than that still goes into an empty queue), so memory
  stays bounded and a slow database only makes the writes larger.
- Order: one queue, one thread; each ``write`` gets consecutive items, in order.
- Retries: a ``write`` that fails transiently (the database cannot be reached: exactly what
  services/db/transient.py calls transient) is called again with the same items, through
  tenacity: after a pause of 0.5 s doubling up to 10 s, each pause a random 50-100 % of that
  (so that workers cut off together do not come back together), until it succeeds or
  ``retry_seconds`` have passed since its first failure. Meanwhile the items stay queued and
  count against ``max_pending_rows``. Each failed try logs a warning naming the error's class
  and SQLSTATE, never the server's address, and counts in
  ``optbench_metric_write_retries_total`` and ``stats.retries``. A failed ``write`` must
  leave nothing behind (its transaction rolled back), so that the retry starts clean.
- Errors: any other failure, or a transient one that outlasts the retry time, is kept in
  ``error`` (the owner raises it); the writer then writes nothing more, and marks what is
  queued done so that no wait hangs.
- Stopping: ``stop`` queues a marker; the thread writes what is before it and ends.

The writer holds no reference to its owner, so that a dropped sink can be collected (and its
finalizer stop the thread).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import tenacity

from services.db.transient import describe, is_transient
from services.telemetry import METRIC_WRITE_RETRIES

log = logging.getLogger(__name__)

Item = TypeVar("Item")
_STOP = object()


@dataclass
class WriterStats:
    """What the writer did: rows stored and skipped, transactions, seconds spent writing."""

    step_rows: int = 0
    epoch_rows: int = 0
    duplicates: int = 0
    transactions: int = 0
    seconds: float = 0.0  # wall time of the transactions
    cpu_seconds: float = 0.0  # CPU time of the writer thread in them
    blocked_seconds: float = 0.0  # the training thread's waits: a full queue, run ends
    retries: int = 0  # transactions tried again after a transient error


class BatchWriter(Generic[Item]):
    """The queue and the thread that empties it into ``write`` (see the module docstring).

    ``rows(item)`` is what an item counts against ``max_pending_rows`` and
    ``max_batch_rows``."""

    def __init__(
        self,
        write: Callable[[Sequence[Item]], None],
        rows: Callable[[Item], int],
        *,
        max_pending_rows: int,
        max_batch_rows: int,
        linger: float,
        retry_seconds: float,
        retry_delays: tuple[float, float],
        stats: WriterStats,
        name: str,
    ) -> None:
        self.write, self.rows = write, rows
        self.max_pending_rows, self.max_batch_rows = max_pending_rows, max_batch_rows
        self.linger = linger
        self.retry_seconds = retry_seconds
        self.first_retry_delay, self.max_retry_delay = retry_delays
        self.stats = stats
        self.name = name
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)  # the writer waits on it
        self.progress = threading.Condition(self.lock)  # the training thread waits on it
        self.queue: deque[tuple[int, Any]] = deque()  # (sequence number, item or _STOP)
        self.pending_rows = 0
        self.queued = 0  # sequence number of the last item queued
        self.done = 0  # ... of the last item written (or dropped after an error)
        self.wanted = 0  # ... of the last item someone waits for
        self.blocked = 0  # producers waiting for room in the queue
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.stopping = False

    # --- the training thread's side ---

    def put(self, item: Item) -> int:
        """Queue the item (waiting while the queue is full); its sequence number."""
        rows = self.rows(item)
        with self.lock:
            if self.pending_rows and self.pending_rows + rows > self.max_pending_rows:
                started = time.perf_counter()
                self.blocked += 1
                self.work.notify()  # the writer goes now instead of lingering
                while self.pending_rows and self.pending_rows + rows > self.max_pending_rows:
                    if self.error is not None:
                        break
                    self.progress.wait()
                self.blocked -= 1
                self.stats.blocked_seconds += time.perf_counter() - started
            self.queued += 1
            self.queue.append((self.queued, item))
            self.pending_rows += rows
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name=self.name)
                self.thread.daemon = True  # the owner waits for what must be stored
                self.thread.start()
            if len(self.queue) == 1 or self.due():  # else the writer lingers on: no wake-up
                self.work.notify()
            return self.queued

    def wait(self, sequence: int) -> None:
        """Until the item ``sequence`` (and all before it) is written, or dropped after an
        error."""
        with self.lock:
            if self.done >= sequence:
                return
            started = time.perf_counter()
            self.wanted = max(self.wanted, sequence)
            self.work.notify()
            while self.done < sequence:
                self.progress.wait()
            self.stats.blocked_seconds += time.perf_counter() - started

    def stop(self) -> None:
        with self.lock:
            if self.thread is None or self.stopping:
                return
            self.stopping = True
            self.queued += 1
            self.queue.append((self.queued, _STOP))
            self.work.notify()

    # --- the writer thread ---

    def due(self) -> bool:
        """Whether to write what is queued now rather than linger for more."""
        return bool(
            self.wanted > self.done
            or self.blocked
            or self.stopping
            or self.error is not None
            or self.pending_rows >= self.max_batch_rows
        )

    def rows_of(self, entry: tuple[int, Any]) -> int:
        return 0 if entry[1] is _STOP else self.rows(entry[1])

    def take(self) -> list[tuple[int, Any]]:
        """Everything queued, up to max_batch_rows (at least one item), once it is due or
        ``linger`` seconds after the first item came."""
        with self.lock:
            while not self.queue:
                self.work.wait()
            deadline = time.monotonic() + self.linger
            while not self.due():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.work.wait(remaining)
            taken: list[tuple[int, Any]] = []
            rows = 0
            while self.queue and (
                not taken or rows + self.rows_of(self.queue[0]) <= self.max_batch_rows
            ):
                entry = self.queue.popleft()
                taken.append(entry)
                rows += self.rows_of(entry)
                if entry[1] is _STOP:
                    break
            return taken

    def finished(self, taken: list[tuple[int, Any]], error: BaseException | None) -> None:
        with self.lock:
            if error is not None and self.error is None:
                self.error = error
            self.pending_rows -= sum(self.rows_of(entry) for entry in taken)
            self.done = taken[-1][0]
            self.progress.notify_all()

    def run(self) -> None:
        while True:
            taken = self.take()
            stop = taken[-1][1] is _STOP
            items = [item for _, item in taken if item is not _STOP]
            error = None
            if items and self.error is None:
                try:
                    self.write_retrying(items)
                except BaseException as failure:  # handed to the training thread
                    error = failure
            self.finished(taken, error)
            if stop:
                return

    def write_retrying(self, items: Sequence[Item]) -> None:
        """``write``, tried again while it fails transiently (module docstring); raises any
        other error at once, and a transient one once the retry time is over."""
        tries = _Tries(self, sum(map(self.rows, items)))
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tries.pause,
            stop=tries.give_up,
            before_sleep=tries.failed,
            reraise=True,  # the write's own exception, not tenacity's RetryError
        )
        retrying(self.write, items)
        if tries.retries:
            log.warning(
                "metric write stored after %d retries, %.1f s after its first failure",
                tries.retries,
                time.monotonic() - tries.first_failure,
            )


class _Tries:
    """One write's tries, as tenacity asks about them: how long to pause, whether to give
    up, what to log and count. The retry time runs from the first failure."""

    def __init__(self, writer: BatchWriter[Any], rows: int) -> None:
        self.writer, self.rows = writer, rows
        self.first_failure = 0.0
        self.retries = 0

    def left(self, state: tenacity.RetryCallState) -> float:
        """Seconds of retry time left after this try's failure."""
        failed = state.outcome_timestamp or time.monotonic()
        if state.attempt_number == 1:
            self.first_failure = failed
        return self.first_failure + self.writer.retry_seconds - failed

    def pause(self, state: tenacity.RetryCallState) -> float:
        writer = self.writer
        delay = min(
            writer.first_retry_delay * 2 ** (state.attempt_number - 1), writer.max_retry_delay
        )
        return min(random.uniform(delay / 2, delay), max(self.left(state), 0.0))

    def give_up(self, state: tenacity.RetryCallState) -> bool:
        if self.left(state) > 0:
            return False
        if self.retries:
            log.error(
                "metric write of %d rows failed again (%s); gave up after %d retries in %.1f s",
                self.rows,
                describe(_error(state)),
                self.retries,
                (state.outcome_timestamp or time.monotonic()) - self.first_failure,
            )
        return True

    def failed(self, state: tenacity.RetryCallState) -> None:
        """Before the pause: a warning, and the retry counted."""
        self.retries += 1
        log.warning(
            "metric write of %d rows failed: the database cannot be reached (%s); "
            "retry %d in %.1f s, for %.0f s more",
            self.rows,
            describe(_error(state)),
            self.retries,
            state.upcoming_sleep,
            self.left(state),
        )
        self.writer.stats.retries += 1
        METRIC_WRITE_RETRIES.inc()


def _error(state: tenacity.RetryCallState) -> BaseException:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    return error if error is not None else RuntimeError("no error")

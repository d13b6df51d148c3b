"""Engine hooks → SQL, written off the training thread.

Each hook call only hands its records to a bounded in-memory queue; one writer thread per
sink writes what is queued, all of it in one
transaction: the step rows of every run of every flush queued with one ``COPY`` and one
statement, the epoch rows with one (services/db/metric_writes.py). The writer lingers up to
``linger`` seconds after the first queued item before it writes, so a transaction usually
holds many engine flushes (a fused group's flush already holds all its runs): a commit, its
round trips and its fixed client work are paid a few times a second instead of once per flush
and run. It writes at once when someone waits (a run's end, ``flush()``, ``close()``), when
``max_batch_rows`` rows are queued, or when the queue is full. Memory stays bounded: with
``max_pending_rows`` rows queued, the next hook call waits for the writer (backpressure)
instead of queueing more, and a slow database just makes the transactions larger.

Order and durability:

- Everything is written in the order the engine reported it (one queue, one writer; a
  transaction holds consecutive items, in order; a run's rows before its end).
- ``on_run_end`` returns once that run's rows and its outcome (and everything before) are
  committed: a run is never recorded as finished before its rows are stored, and when
  ``Experiment.run_all`` returns (after the last ``on_run_end``) everything is stored, so
  the caller can finish and summarise the job at once (workers/execution.py does). That is
  the one wait per run; ``on_run_start``, ``on_flush`` and ``on_epochs`` never wait unless
  the queue is full. (A start only marks a run running, and is skipped if the job has
  ended meanwhile: the training failed and the job was finished before the start was
  written.)
- ``flush()`` waits for everything handed over so far; ``close()`` (or leaving a ``with``
  block) does too and then stops the writer thread. A sink dropped without ``close()``
  stops its thread once it has written what was queued.
- A write that fails because the database cannot be reached (connection refused or lost,
  server closed the connection, the database starting up or shutting down: exactly what
  services/db/transient.py calls transient) is tried again: the same items, in a new
  transaction, after a pause of 0.5 s doubling up to 10 s (each pause a random 50-100 % of
  that, so that workers cut off together do not come back together), until it commits or
  ``OPTBENCH_WRITE_RETRY_SECONDS`` (600; 0 = no retry) have passed since its first failure.
  Meanwhile the items stay queued and the training thread goes on queueing until
  ``max_pending_rows`` rows are pending, then waits (backpressure): no row is dropped, and
  ``on_run_end`` / ``flush()`` / ``close()`` wait for the database to come back. The rows
  are stored once and in order: the failed transaction rolled back, and the writer forgets
  what it noted as stored in it (``stored_through``, restored as it was before the try); if
  the connection broke during COMMIT, which may then have committed, the repeated rows meet
  their stored keys and take the staging path (``ON CONFLICT DO NOTHING``). Each failed try
  logs a warning (the error's class and SQLSTATE, never the server's address) and counts in
  ``optbench_metric_write_retries_total``; ``stats.retries`` counts them per sink.
- Any other failed write (an integrity error, a bug), or a transient failure that outlasts
  the retry time, is raised in the training thread (the same exception) at its next hook
  call, ``flush()`` or ``close()``, and at every one after that: rows are never dropped
  silently. The writer then writes nothing more.

The one per-row work left on the training thread is reading each step record's values into
a tuple (one ``attrgetter`` call per record, in C): the records can be dropped at once, and
tuples of plain numbers are soon untracked by Python's cycle collector, whereas queued
records would be scanned by every collection until written and, promoted to the oldest
generation, trigger full collections of the whole heap (measured: 0.2 s each, in one job of
four at 48,000 rows).

``background=False`` writes every hook call in the calling thread instead (the same writes,
one transaction per call, retried the same way).

The writer remembers, per run, the last step stored (``steps_done`` when the run started, then
what it wrote), so rows it knows to be new go straight into ``step_metric`` and a redelivered
task's repeated steps take the staging path without a failed attempt first.

Measured with benchmarks/bench_storage_overhead.py on this project's 2-core VM (shared with
other work), PostgreSQL 15 local, one torch thread: training the lecture job (digits, an MLP
with 128 hidden units, 8 optimizers of which 7 train fused; 560 epochs, about 9.6 s, 67,200
step and 4,480 epoch rows) with this sink took 2.8 % longer than with no-op hooks (ratio of
the medians of 5 repeats; single repeats +2.7 % to +9.1 %, depending on what else the
machine ran; three runs of 7 repeats at 400 epochs: +4.8 %, +6.5 %, +7.6 %), where the
synchronous sink it replaces (one transaction per run per flush, on the training thread)
took 124 % longer. Per job the writer used 0.09 s of CPU in 16 transactions, the training
thread 0.03 s in the hooks, and the server 0.37 s (before, at 400 epochs: 4.3 s in this
process and 3.3 s in the server). The same writes made from another process slow the
training by 0.4 %: what is left here is the writer's share of the GIL, the waits at the
runs' ends (0.06 s) and, when another process holds the second core, the server's CPU (most
of it the row-by-row foreign key check, services/db/metric_writes.py). Fed as fast as it
takes them, 8 runs per flush, the sink stores 137,000 to 213,000 rows/s whatever the flush
size (17, 100 or 1,000 rows per run), where the synchronous sink stored 13,200, 39,300 and
90,700.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from services.db import metric_writes, store
from services.db.models import FINISHED, STEP_FIELDS, Job, Run
from services.db.session import unit_of_work
from services.db.transient import describe, is_transient
from services.settings import get_settings
from services.telemetry import (
    METRIC_ROWS_DEDUPLICATED,
    METRIC_ROWS_WRITTEN,
    METRIC_WRITE_RETRIES,
    METRIC_WRITE_SECONDS,
)
from workers.engine import EpochRecord, Hooks, RunConfig, RunResult, StepRecord

# A step record's values in STEP_FIELDS order: what is queued instead of the record.
_STEP_VALUES = operator.attrgetter(*STEP_FIELDS)
_STEP = STEP_FIELDS.index("step")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Steps:
    runs: Sequence[tuple[int, list[tuple[Any, ...]]]]  # run, its steps' values


@dataclass(frozen=True)
class _Epochs:
    run: int
    epochs: list[EpochRecord]


@dataclass(frozen=True)
class _Start:
    run: int


@dataclass(frozen=True)
class _End:
    run: int
    result: RunResult


_Item = _Steps | _Epochs | _Start | _End
_STOP = object()


def _rows(item: _Item) -> int:
    if isinstance(item, _Steps):
        return sum(len(steps) for _, steps in item.runs)
    if isinstance(item, _Epochs):
        return len(item.epochs)
    return 0


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


class _Writer:
    """The queue and the thread that empties it. Holds no reference to its sink, so that a
    dropped sink can be collected (and its thread told to stop)."""

    def __init__(
        self,
        max_pending_rows: int,
        max_batch_rows: int,
        linger: float,
        retry_seconds: float,
        retry_delays: tuple[float, float],
    ) -> None:
        self.max_pending_rows, self.max_batch_rows = max_pending_rows, max_batch_rows
        self.linger = linger
        self.retry_seconds = retry_seconds
        self.first_retry_delay, self.max_retry_delay = retry_delays
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
        self.stats = WriterStats()
        # Per run, the last step known stored: steps_done when it started, then what was
        # written. Rows beyond it are new, and go straight into step_metric.
        self.stored_through: dict[int, int] = {}

    # --- the training thread's side ---

    def put(self, item: Any, rows: int = 0) -> int:
        with self.lock:
            # Backpressure: wait while the queue is full (an item larger than the limit
            # still goes into an empty queue).
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
                self.thread = threading.Thread(target=self.run, name="optbench-sql-sink")
                self.thread.daemon = True  # a job's last rows are waited for (on_run_end)
                self.thread.start()
            if len(self.queue) == 1 or self.due():  # else the writer lingers on: no wake-up
                self.work.notify()
            return self.queued

    def wait(self, sequence: int) -> None:
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
                not taken or rows + _rows_of(self.queue[0]) <= self.max_batch_rows
            ):
                entry = self.queue.popleft()
                taken.append(entry)
                rows += _rows_of(entry)
                if entry[1] is _STOP:
                    break
            return taken

    def finished(self, taken: list[tuple[int, Any]], error: BaseException | None) -> None:
        with self.lock:
            if error is not None and self.error is None:
                self.error = error
            self.pending_rows -= sum(_rows_of(entry) for entry in taken)
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

    def write_retrying(self, items: Sequence[_Item]) -> None:
        """``write``, tried again with backoff while it fails transiently (module docstring);
        raises any other error at once, and a transient one once the retry time is over."""
        retries, first_failure, delay = 0, 0.0, self.first_retry_delay
        while True:
            hint = dict(self.stored_through)
            try:
                self.write(items)
            except Exception as error:
                self.stored_through = hint  # the transaction rolled back: so did its rows
                if not is_transient(error):
                    raise
                now = time.monotonic()
                if not retries:
                    first_failure = now
                left = first_failure + self.retry_seconds - now
                if left <= 0:
                    if retries:
                        log.error(
                            "metric write of %d rows failed again (%s); gave up after %d "
                            "retries in %.1f s",
                            sum(map(_rows, items)),
                            describe(error),
                            retries,
                            now - first_failure,
                        )
                    raise
                pause = min(random.uniform(delay / 2, delay), left)
                retries += 1
                log.warning(
                    "metric write of %d rows failed: the database cannot be reached (%s); "
                    "retry %d in %.1f s, for %.0f s more",
                    sum(map(_rows, items)),
                    describe(error),
                    retries,
                    pause,
                    left,
                )
                self.stats.retries += 1
                METRIC_WRITE_RETRIES.inc()
                time.sleep(pause)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            if retries:
                log.warning(
                    "metric write stored after %d retries, %.1f s after its first failure",
                    retries,
                    time.monotonic() - first_failure,
                )
            return

    def write(self, items: Sequence[_Item]) -> None:
        """One transaction: the items in order, consecutive rows written together."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        steps: list[tuple[int, list[tuple[Any, ...]]]] = []
        epochs: list[tuple[int, list[EpochRecord]]] = []
        written = {"step": 0, "epoch": 0}
        given = {"step": 0, "epoch": 0}
        with unit_of_work() as session:
            for item in items:
                if isinstance(item, _Steps):
                    steps.extend(item.runs)
                elif isinstance(item, _Epochs):
                    epochs.append((item.run, item.epochs))
                else:
                    self.write_rows(session, steps, epochs, written, given)
                    steps, epochs = [], []
                    if isinstance(item, _Start):
                        self.start(session, item.run)
                    else:
                        store.finish_run(session, item.run, item.result)
            self.write_rows(session, steps, epochs, written, given)
        seconds = time.perf_counter() - started
        stats = self.stats
        stats.transactions += 1
        stats.seconds += seconds
        stats.cpu_seconds += time.thread_time() - cpu_started
        stats.step_rows += written["step"]
        stats.epoch_rows += written["epoch"]
        stats.duplicates += given["step"] + given["epoch"] - written["step"] - written["epoch"]
        for granularity in ("step", "epoch"):
            if given[granularity]:
                METRIC_WRITE_SECONDS.labels(granularity).observe(seconds)
                METRIC_ROWS_WRITTEN.labels(granularity).inc(written[granularity])
                METRIC_ROWS_DEDUPLICATED.labels(granularity).inc(
                    given[granularity] - written[granularity]
                )

    def start(self, session: Session, run_id: int) -> None:
        """The run is running, unless its job has ended meanwhile (on_run_start does not
        wait: the training may have failed, and the job been finished, before this start
        is written)."""
        run = session.get_one(Run, run_id, with_for_update=True)
        through = self.stored_through
        through[run_id] = max(run.steps_done, through.get(run_id, 0))
        if session.get_one(Job, run.job_id).status not in FINISHED:
            store.start_run(session, run_id)

    def write_rows(
        self,
        session: Session,
        steps: list[tuple[int, list[tuple[Any, ...]]]],
        epochs: list[tuple[int, list[EpochRecord]]],
        written: dict[str, int],
        given: dict[str, int],
    ) -> None:
        through = self.stored_through
        if steps:
            fresh = all(rows[0][_STEP] > through.get(run, 0) for run, rows in steps)
            written["step"] += metric_writes.write_step_batch(session, steps, fresh=fresh)
            given["step"] += sum(len(rows) for _, rows in steps)
            for run, rows in steps:  # sorted by step (else only the hint is off)
                through[run] = max(through.get(run, 0), rows[-1][_STEP])
        if epochs:
            written["epoch"] += metric_writes.write_epoch_batch(session, epochs)
            given["epoch"] += sum(len(rows) for _, rows in epochs)


def _rows_of(entry: tuple[int, Any]) -> int:
    item = entry[1]
    return 0 if item is _STOP else _rows(item)


class SqlSink(Hooks):
    """Stores every step and epoch of every run, and each run's start and outcome, from a
    writer thread (see the module docstring for order, waits, errors and closing)."""

    def __init__(
        self,
        *,
        background: bool = True,
        max_pending_rows: int = 100_000,
        max_batch_rows: int = 50_000,
        linger: float = 1.0,
        retry_seconds: float | None = None,
        retry_delays: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        """``retry_seconds``: how long a write failing transiently is tried again (None:
        ``OPTBENCH_WRITE_RETRY_SECONDS``); ``retry_delays``: the first and the longest pause
        between tries."""
        self.background = background
        if retry_seconds is None:
            retry_seconds = get_settings().write_retry_seconds
        self._writer = _Writer(
            max_pending_rows, max_batch_rows, linger, retry_seconds, retry_delays
        )
        self._closed = False
        # A sink dropped without close(): its thread stops after writing what was queued.
        weakref.finalize(self, self._writer.stop)

    @property
    def stats(self) -> WriterStats:
        return self._writer.stats

    def _check(self) -> None:
        if self._writer.error is not None:
            raise self._writer.error

    def _submit(self, item: _Item, *, wait: bool = False) -> None:
        self._check()
        if self._closed:
            raise RuntimeError("this SqlSink is closed")
        if not self.background:
            self._writer.write_retrying([item])
            return
        sequence = self._writer.put(item, _rows(item))
        if wait:
            self._writer.wait(sequence)
            self._check()

    def on_start(self, total_steps: int) -> None:
        self._check()

    def on_run_start(self, run: RunConfig, total_steps: int) -> None:
        self._submit(_Start(run.key))

    def on_steps(self, run: RunConfig, steps: Sequence[StepRecord]) -> None:
        self.on_flush([(run, steps)])

    def on_flush(self, batch: Sequence[tuple[RunConfig, Sequence[StepRecord]]]) -> None:
        runs = [(run.key, list(map(_STEP_VALUES, steps))) for run, steps in batch if steps]
        if runs:
            self._submit(_Steps(runs))

    def on_epochs(self, run: RunConfig, epochs: Sequence[EpochRecord]) -> None:
        if epochs:
            self._submit(_Epochs(run.key, list(epochs)))

    def on_run_end(self, run: RunConfig, result: RunResult) -> None:
        """Returns once the run's rows and its outcome are committed."""
        self._submit(_End(run.key, result), wait=True)

    def flush(self) -> None:
        """Wait until everything handed over so far is committed; raise a failed write."""
        if self.background and not self._closed:
            self._writer.wait(self._writer.queued)
        self._check()

    def close(self) -> None:
        """Write everything still queued, stop the writer thread; raise a failed write."""
        if not self._closed:
            self._closed = True
            writer = self._writer
            writer.stop()
            if writer.thread is not None:
                writer.thread.join()
        self._check()

    def __enter__(self) -> SqlSink:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if error is None:
            self.close()
            return
        with contextlib.suppress(BaseException):  # already failing: let that error through
            self.close()

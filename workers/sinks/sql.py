"""Engine hooks → SQL, written off the training thread.

Each hook call only queues what it was given (workers/sinks/writer.py: a bounded queue, one
writer thread per sink, lingering up to ``linger`` seconds for more); the writer writes
everything queued in one transaction: the step rows of every run of every flush with one
``COPY`` and one statement, the epoch rows with one (services/db/metric_writes.py).

Steps come as the engine's columns (``StepColumns``, one numpy array per field); a flush's
runs are concatenated into one ``metric_columns.Columns`` (run ids by ``np.repeat``) on the
training thread, a copy that the engine's arrays need not outlive, and go straight into the
``COPY`` encoder (SQLite: ``executemany`` of their rows); NaN is stored as NULL. No Python
object is made per row: queued per-row objects would be scanned by every garbage collection
until written.

Order and durability:

- Everything is written in the order the engine reported it (one queue, one writer; a
  transaction holds consecutive items, in order; a run's rows before its end).
- ``on_run_end`` returns once that run's rows and its outcome (and everything before) are
  committed: a run is never recorded as finished before its rows are stored, and when
  ``Experiment.run_all`` returns everything is stored, so the caller can finish and
  summarise the job at once. That is the one wait per run, or per group of runs ending
  together (``on_runs_end``: the last epoch's runs, one transaction); ``on_run_start``, ``on_flush``
  and ``on_epochs`` never wait unless ``max_pending_rows`` rows are queued (backpressure).
  A start only marks a run running, and is skipped if the job has ended meanwhile (the
  training failed and the job was finished before the start was written).
- ``flush()`` waits for everything handed over so far; ``close()`` (or leaving a ``with``
  block) does too and then stops the writer thread. A sink dropped without ``close()``
  stops its thread once it has written what was queued.
- A write failing because the database cannot be reached is retried (the writer's policy:
  OPTBENCH_WRITE_RETRY_SECONDS, 600; 0 = no retry): no row is dropped, and ``on_run_end``,
  ``flush()`` and ``close()`` wait for the database to come back. Rows are stored once and
  in order: the failed transaction rolled back, and so does what the writer noted as stored
  in it (``stored_through``); if the connection broke during COMMIT, which may then have
  committed, the repeated rows meet their stored keys: that COPY (run without a savepoint)
  aborts the transaction, which is written again with every step row through staging.
- Any other failed write (an integrity error, a bug: a NaN in a required column is an
  ``IntegrityError``), or a transient one that outlasts the retry time, is raised in the
  training thread (the same exception) at its next hook call, ``flush()`` or ``close()``,
  and at every one after that: rows are never dropped silently. Nothing more is written.

The writer remembers, per run, the last step stored (``steps_done`` when the run started,
then what it wrote), so rows it knows to be new go straight into ``step_metric`` and a
redelivered task's repeated steps take the staging path without a failed attempt first.

``background=False`` writes every hook call in the calling thread instead (the same writes,
one transaction per call, retried the same way). What this costs the training, measured:
docs/performance.md, "Storing every step".
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.db import metric_writes, store
from services.db.metric_columns import Columns
from services.db.models import FINISHED, Job, Run
from services.db.session import get_writer_engine, unit_of_work
from services.settings import get_settings
from services.telemetry import METRIC_ROWS_DEDUPLICATED, METRIC_ROWS_WRITTEN, METRIC_WRITE_SECONDS
from workers.engine import EpochRecord, Hooks, RunConfig, RunResult, StepColumns
from workers.sinks.writer import BatchWriter, WriterStats

__all__ = ["SqlSink", "WriterStats"]


@dataclass(frozen=True)
class _Steps:
    columns: Columns  # the steps of a flush's runs, concatenated
    spans: tuple[tuple[int, int, int], ...]  # per run: its id, first and last step


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


def _rows(item: _Item) -> int:
    if isinstance(item, _Steps):
        return len(item.columns)
    if isinstance(item, _Epochs):
        return len(item.epochs)
    return 0


class _Transactions:
    """What the queued items write: ``write`` makes one transaction of consecutive items,
    consecutive rows written together."""

    def __init__(self, stats: WriterStats) -> None:
        self.stats = stats
        # Per run, the last step known stored: steps_done when it started, then what was
        # written. Rows beyond it are new, and go straight into step_metric.
        self.stored_through: dict[int, int] = {}

    def write(self, items: Sequence[_Item]) -> None:
        hint = dict(self.stored_through)
        try:
            try:
                self.transaction(items, direct=True)
            except metric_writes.RowsNotNew:  # a stored key after all: all again, staged
                self.stored_through = dict(hint)
                self.transaction(items, direct=False)
        except Exception:
            self.stored_through = hint  # the transaction rolled back: so did its rows
            raise

    def transaction(self, items: Sequence[_Item], *, direct: bool) -> None:
        """One transaction of the items. ``direct``: step rows the writer knows to be new go
        straight into ``step_metric`` by a COPY without a savepoint, so that one meeting a
        stored key after all (a commit whose answer was lost) aborts the transaction and
        ``write`` makes it again with ``direct=False``, every step row through staging."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        steps: list[_Steps] = []
        epochs: list[tuple[int, list[EpochRecord]]] = []
        written = {"step": 0, "epoch": 0}
        given = {"step": 0, "epoch": 0}
        ends: list[tuple[int, RunResult]] = []  # consecutive run ends: finished together
        with unit_of_work(get_writer_engine()) as session:
            for item in items:
                if ends and not isinstance(item, _End):
                    store.finish_runs(session, ends)
                    ends = []
                if isinstance(item, _Steps):
                    steps.append(item)
                elif isinstance(item, _Epochs):
                    epochs.append((item.run, item.epochs))
                else:
                    if not ends:  # a run's rows (and all before them) before its end
                        self.write_rows(session, steps, epochs, written, given, direct)
                        steps, epochs = [], []
                    if isinstance(item, _Start):
                        self.start(session, item.run)
                    else:
                        ends.append((item.run, item.result))
            if ends:
                store.finish_runs(session, ends)
            self.write_rows(session, steps, epochs, written, given, direct)
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
        steps: list[_Steps],
        epochs: list[tuple[int, list[EpochRecord]]],
        written: dict[str, int],
        given: dict[str, int],
        direct: bool,
    ) -> None:
        through = self.stored_through
        if steps:
            spans = [span for item in steps for span in item.spans]
            fresh = direct and all(first > through.get(run, 0) for run, first, _ in spans)
            columns = Columns.join([item.columns for item in steps])
            written["step"] += metric_writes.write_step_columns(
                session, columns, fresh=fresh, savepoint=False
            )
            given["step"] += len(columns)
            for run, _, last in spans:  # sorted by step (else only the hint is off)
                through[run] = max(through.get(run, 0), last)
        if epochs:
            written["epoch"] += metric_writes.write_epoch_batch(session, epochs)
            given["epoch"] += sum(len(rows) for _, rows in epochs)


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
        stats = WriterStats()
        self._writer: BatchWriter[_Item] = BatchWriter(
            _Transactions(stats).write,
            _rows,
            max_pending_rows=max_pending_rows,
            max_batch_rows=max_batch_rows,
            linger=linger,
            retry_seconds=retry_seconds,
            retry_delays=retry_delays,
            stats=stats,
            name="optbench-sql-sink",
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
        self._submit_all([item], wait=wait)

    def _submit_all(self, items: Sequence[_Item], *, wait: bool = False) -> None:
        """Queue the items in order; ``wait``: until the last (so all) is committed.
        Without the writer thread, one transaction of them all."""
        self._check()
        if self._closed:
            raise RuntimeError("this SqlSink is closed")
        if not self.background:
            self._writer.write_retrying(items)
            return
        sequence = 0
        for item in items:
            sequence = self._writer.put(item)
        if wait:
            self._writer.wait(sequence)
            self._check()

    def on_start(self, total_steps: int) -> None:
        self._check()

    def on_run_start(self, run: RunConfig, total_steps: int) -> None:
        self._submit(_Start(run.key))

    def on_steps(self, run: RunConfig, steps: StepColumns) -> None:
        self.on_flush([(run, steps)])

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        runs = [(run.key, steps) for run, steps in batch if len(steps)]
        if runs:
            spans = tuple((key, int(steps.step[0]), int(steps.step[-1])) for key, steps in runs)
            self._submit(_Steps(metric_writes.step_columns(runs), spans))

    def on_epochs(self, run: RunConfig, epochs: Sequence[EpochRecord]) -> None:
        if epochs:
            self._submit(_Epochs(run.key, list(epochs)))

    def on_run_end(self, run: RunConfig, result: RunResult) -> None:
        """Returns once the run's rows and its outcome are committed."""
        self._submit(_End(run.key, result), wait=True)

    def on_runs_end(self, ends: Sequence[tuple[RunConfig, RunResult]]) -> None:
        """Returns once the runs' rows and outcomes are committed: one wait, one transaction
        (the writer takes everything queued), not one commit after another per run."""
        self._submit_all([_End(run.key, result) for run, result in ends], wait=True)

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

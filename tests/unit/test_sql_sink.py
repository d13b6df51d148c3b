"""The SQL sink: batched, idempotent writes from a writer thread, on SQLite and on PostgreSQL:
order, waits, backpressure, errors and closing."""

from __future__ import annotations

import gc
import itertools
import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from services.db import metric_queries, metric_writes, store
from services.db.models import STEP_FIELDS, Run, StepMetric, StepRollup
from services.db.session import unit_of_work
from services.spec import LECTURE_SPEC, JobSpec
from workers.engine import (
    EpochRecord,
    OptimizerConfig,
    RunConfig,
    RunResult,
    StepColumns,
    StepRecord,
)
from workers.sinks.sql import SqlSink


def a_run_id() -> int:
    with unit_of_work() as session:
        job = store.create_job(session, JobSpec.model_validate(LECTURE_SPEC))
        return job.runs[1].id


def records(first: int, last: int) -> list[StepRecord]:
    return [
        StepRecord(
            step=s,
            epoch=1 + (s - 1) // 10,
            loss=1.0 / s,
            accuracy=0.5,
            lr=0.05,
            grad_norm=0.1,
            train_seconds=0.01 * s,
            samples=64,
        )
        for s in range(first, last + 1)
    ]


def steps(first: int, last: int) -> StepColumns:
    """Steps first..last of a run, as the engine hands them to sinks."""
    return StepColumns.from_records(records(first, last))


def stored_steps(run_id: int) -> list[int]:
    with unit_of_work() as session:
        return list(
            session.scalars(
                select(StepMetric.step).where(StepMetric.run_id == run_id).order_by(StepMetric.step)
            )
        )


def test_rewriting_steps_and_epochs_stores_each_once(database: str) -> None:
    run_id = a_run_id()
    run = RunConfig(run_id, OptimizerConfig("sgd", "sgd", "SGD", {}), 0)
    sink = SqlSink()
    sink.on_run_start(run, 30)
    sink.on_steps(run, steps(1, 20))
    sink.on_steps(run, steps(11, 30))  # a redelivered task repeats steps 11..20
    sink.on_steps(run, steps(1, 30))
    epoch = EpochRecord(1, 10, 0.5, 0.8, 0.6, 0.75, 0.1)
    sink.on_epochs(run, [epoch])
    sink.on_epochs(run, [epoch])
    sink.on_run_end(
        run,
        RunResult(steps=30, diverged=False, train_seconds=0.3, test_loss=0.4, test_accuracy=0.7),
    )

    assert stored_steps(run_id) == list(range(1, 31))
    with unit_of_work() as session:
        assert metric_queries.series(session, [run_id], "epoch")[run_id]["val_accuracy"] == [0.75]
        columns = metric_queries.series(session, [run_id], "step")[run_id]
        run_row = session.get_one(Run, run_id)
    assert columns["loss"][:2] == [1.0, 0.5]
    assert run_row.status == "succeeded" and run_row.steps_done == 30
    assert (run_row.test_loss, run_row.test_accuracy, run_row.diverged) == (0.4, 0.7, False)


def test_a_flush_is_one_statement_even_for_many_rows(database: str) -> None:
    from sqlalchemy import event

    from services.db.session import get_engine

    run_id = a_run_id()
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(get_engine(), "before_cursor_execute", listener)
    try:
        with unit_of_work() as session:
            written = metric_writes.write_steps(
                session,
                run_id,
                [{k: getattr(r, k) for k in STEP_FIELDS} for r in records(1, 500)],
            )
    finally:
        event.remove(get_engine(), "before_cursor_execute", listener)
    # on PostgreSQL a WITH ... INSERT (that also feeds step_rollup)
    inserts = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "WITH"))]
    assert written == 500 and len(inserts) == 1
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(StepMetric)) == 500


# --- the writer thread ---


def lecture_runs(count: int = 3) -> list[RunConfig]:
    with unit_of_work() as session:
        job = store.create_job(session, JobSpec.model_validate(LECTURE_SPEC))
        return [
            RunConfig(run.id, OptimizerConfig(run.label, run.optimizer, "SGD", {}), run.seed)
            for run in job.runs[:count]
        ]


def a_result(steps: int) -> RunResult:
    return RunResult(steps=steps, diverged=False, train_seconds=0.1 * steps)


def epoch(n: int) -> EpochRecord:
    return EpochRecord(n, 10 * n, 1.0 / n, 0.5, 2.0 / n, 0.25, 0.1 * n)


class Spy:
    """Wraps metric_writes.write_step_columns: records each call's thread and runs (rows per
    run), and can hold the writer inside a write until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, list[tuple[int, int]]]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        original = metric_writes.write_step_columns

        def write_step_columns(session: Any, columns: Any, **options: Any) -> int:
            self.entered.set()
            self.hold.wait(10)
            runs = [(run, len(list(rows))) for run, rows in itertools.groupby(columns.run_id)]
            self.calls.append((threading.current_thread().name, runs))
            return original(session, columns, **options)

        monkeypatch.setattr(metric_writes, "write_step_columns", write_step_columns)


def test_a_flush_of_several_runs_is_written_off_the_training_thread_in_one_write(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    runs = lecture_runs()
    sink = SqlSink()
    for run in runs:
        sink.on_run_start(run, 30)
    sink.on_flush([(run, steps(1, 30)) for run in runs])
    for run in runs:
        sink.on_epochs(run, [epoch(1)])
    for run in runs:
        sink.on_run_end(run, a_result(30))
        assert stored_steps(run.key) == list(range(1, 31))  # stored before it returned
    assert spy.calls == [("optbench-sql-sink", [(run.key, 30) for run in runs])]
    with unit_of_work() as session:
        stored = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(keys(runs))))}
        epochs = metric_queries.series(session, keys(runs), "epoch")
    assert {(r.status, r.steps_done) for r in stored.values()} == {("succeeded", 30)}
    assert all(stored[run.key].started_at is not None for run in runs)
    assert [epochs[run.key]["val_accuracy"] for run in runs] == [[0.25]] * 3
    assert sink.stats.step_rows == 90 and sink.stats.epoch_rows == 3
    sink.close()
    assert sink._writer.thread is not None and not sink._writer.thread.is_alive()


def keys(runs: list[RunConfig]) -> list[int]:
    return [run.key for run in runs]


def test_runs_ending_together_are_committed_in_one_transaction_before_it_returns(
    database: str,
) -> None:
    runs = lecture_runs(3)
    sink = SqlSink()
    for run in runs:
        sink.on_run_start(run, 30)
    sink.on_flush([(run, steps(1, 30)) for run in runs])
    sink.flush()
    before = sink.stats.transactions
    results = [RunResult(steps=30, diverged=False, train_seconds=0.3, test_loss=0.1 * k)
               for k in range(1, 4)]  # fmt: skip
    sink.on_runs_end(list(zip(runs, results, strict=True)))
    assert sink.stats.transactions == before + 1  # one wait, one commit for the three
    with unit_of_work() as session:
        stored = [session.get_one(Run, run.key) for run in runs]
    assert [(r.status, r.steps_done) for r in stored] == [("succeeded", 30)] * 3
    assert [r.test_loss for r in stored] == [0.1, 0.2, pytest.approx(0.3)]
    sink.close()


def test_flushes_that_queue_while_the_database_is_slow_share_one_transaction(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    spy.hold.clear()  # the database is slow: the first write does not end yet
    (run,) = lecture_runs(1)
    with SqlSink(linger=0.0) as sink:
        sink.on_flush([(run, steps(1, 10))])
        assert spy.entered.wait(5)
        for first in range(11, 61, 10):  # queued meanwhile
            sink.on_flush([(run, steps(first, first + 9))])
        spy.hold.set()
        sink.flush()
        assert stored_steps(run.key) == list(range(1, 61))
    assert [runs for _, runs in spy.calls] == [[(run.key, 10)], [(run.key, 50)]]  # 5 flushes
    assert sink.stats.transactions == 2


def test_a_full_queue_makes_training_wait_instead_of_growing(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    spy.hold.clear()
    (run,) = lecture_runs(1)
    sink = SqlSink(max_pending_rows=50, linger=0.0)
    sink.on_flush([(run, steps(1, 30))])  # taken by the writer, which is held
    assert spy.entered.wait(5)
    sink.on_flush([(run, steps(31, 50))])  # 50 rows pending: the limit
    training = threading.Thread(target=sink.on_flush, args=([(run, steps(51, 60))],))
    training.start()
    training.join(0.3)
    assert training.is_alive()  # waits for room
    assert sink._writer.pending_rows == 50
    spy.hold.set()
    training.join(5)
    assert not training.is_alive()
    sink.close()
    assert stored_steps(run.key) == list(range(1, 61))
    assert sink.stats.blocked_seconds > 0.2


def test_a_failed_write_is_raised_in_the_training_thread_and_stays_raised(
    database: str,
) -> None:
    (run,) = lecture_runs(1)
    missing = RunConfig(run.key + 1000, run.optimizer, 0)  # no such run: a foreign key fails
    sink = SqlSink(linger=0.0)
    sink.on_flush([(missing, steps(1, 5))])
    sink._writer.wait(sink._writer.queued)  # the writer has failed by now
    with pytest.raises(IntegrityError) as raised:
        sink.on_flush([(run, steps(1, 5))])
    for call in (sink.flush, sink.close, lambda: sink.on_run_end(run, a_result(5))):
        with pytest.raises(IntegrityError) as again:
            call()
        assert again.value is raised.value
    assert sink._writer.thread is not None and not sink._writer.thread.is_alive()
    assert stored_steps(run.key) == []  # and nothing after the failure was written


def test_a_sink_left_with_an_exception_or_dropped_still_writes_what_was_queued(
    database: str,
) -> None:
    first, second = lecture_runs(2)
    with pytest.raises(RuntimeError, match="training failed"), SqlSink() as sink:
        sink.on_flush([(first, steps(1, 20))])
        raise RuntimeError("training failed")
    assert stored_steps(first.key) == list(range(1, 21))

    dropped = SqlSink(linger=0.05)
    dropped.on_flush([(second, steps(1, 20))])
    thread = dropped._writer.thread
    del dropped
    gc.collect()
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()
    assert stored_steps(second.key) == list(range(1, 21))


def test_a_start_written_after_the_job_was_finished_changes_nothing(database: str) -> None:
    (run,) = lecture_runs(1)
    with unit_of_work() as session:
        job_id = session.get_one(Run, run.key).job_id
        store.finish_job(session, job_id, error="RuntimeError: training failed")
    with SqlSink() as sink:
        sink.on_run_start(run, 10)  # the writer only gets to it now
    with unit_of_work() as session:
        stored = session.get_one(Run, run.key)
        assert (stored.status, stored.started_at) == ("failed", None)


def test_a_run_trained_again_while_its_job_runs_is_running_again(database: str) -> None:
    (run,) = lecture_runs(1)
    with SqlSink() as sink:  # a first delivery ended the run, then the worker died
        sink.on_run_start(run, 10)
        sink.on_run_end(run, a_result(10))
        sink.on_run_start(run, 10)  # the redelivered task trains it again
        sink.flush()
        with unit_of_work() as session:
            assert session.get_one(Run, run.key).status == "running"
        sink.on_run_end(run, a_result(10))
    with unit_of_work() as session:
        assert session.get_one(Run, run.key).status == "succeeded"


def test_a_redelivered_run_writes_its_repeated_steps_through_staging_at_once(
    postgres_db: str,
) -> None:
    import psycopg

    (run,) = lecture_runs(1)
    with unit_of_work() as session:  # the first delivery stored 30 steps
        metric_writes.write_steps(session, run.key, [row(r) for r in records(1, 30)])
    statements: list[str] = []
    original = psycopg.Cursor.execute

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(query))
        return original(self, query, *args, **kwargs)

    with SqlSink() as sink:
        sink.on_run_start(run, 40)
        sink.flush()
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        try:
            sink.on_flush([(run, steps(1, 40))])
            sink.on_flush([(run, steps(41, 50))])
            sink.flush()
        finally:
            psycopg.Cursor.execute = original  # type: ignore[method-assign]
    assert stored_steps(run.key) == list(range(1, 51))
    assert (sink.stats.step_rows, sink.stats.duplicates) == (20, 30)
    assert not any("ROLLBACK TO SAVEPOINT" in s for s in statements)  # no failed COPY first


def row(record: StepRecord) -> dict[str, Any]:
    return {field: getattr(record, field) for field in STEP_FIELDS}


def test_without_a_thread_every_call_is_written_before_it_returns(database: str) -> None:
    (run,) = lecture_runs(1)
    sink = SqlSink(background=False)
    sink.on_run_start(run, 20)
    sink.on_flush([(run, steps(1, 20))])
    assert stored_steps(run.key) == list(range(1, 21))
    sink.on_run_end(run, a_result(20))
    sink.close()
    assert sink._writer.thread is None


def test_the_engine_trains_a_job_through_the_sink_and_every_row_is_stored_when_it_returns(
    database: str,
) -> None:
    from services.settings import get_settings
    from workers.adapter import job_config
    from workers.engine import Experiment
    from workers.engine.hooks import CompositeHooks
    from workers.sinks.memory import MemorySink

    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {"name": "mlp", "hidden": [16]},
            "optimizers": [{"name": "sgd"}, {"name": "adam"}, {"name": "gd"}],
            "epochs": 3,
            "batch_size": 128,
            "seeds": [0, 1],
        }
    )
    with unit_of_work() as session:
        job = store.create_job(session, spec)
        config = job_config(session, job, spec, "cpu", get_settings())
    memory = MemorySink()
    Experiment(config).run_all(CompositeHooks(SqlSink(), memory))  # no close(): not needed
    with unit_of_work() as session:
        stored = store.get_job(session, job.id)
        series = metric_queries.series(session, [run.id for run in stored.runs], "step")
        for run in stored.runs:
            assert run.status == "succeeded"
            assert run.steps_done == memory.results[run.id].steps == len(memory.steps[run.id])
            assert series[run.id]["step"] == [s.step for s in memory.steps[run.id]]
            assert series[run.id]["loss"] == [s.loss for s in memory.steps[run.id]]


# --- the database away: transient errors are retried, others are not ---


def lose_the_connection(session: Any) -> None:
    """What a database that went away does to the transaction in progress. On PostgreSQL for
    real: the server ends this session's connection (SQLSTATE 57P01, as when it shuts down);
    on SQLite, which has no connection to lose, the error psycopg raises for a lost one."""
    import psycopg
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    raise OperationalError(
        "COMMIT", None, psycopg.OperationalError("server closed the connection unexpectedly")
    )


class Outage:
    """Makes the writer's transactions fail as if the database were away: in
    metric_writes.write_epoch_batch, which a transaction calls after its step rows (so the
    failure rolls back rows already sent), while ``failures`` are left or until
    ``over`` is set. Also records write_step_columns's ``fresh`` hint per call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, failures: int = 0) -> None:
        self.failures = failures
        self.over = threading.Event()
        self.failed = 0
        self.fresh: list[bool] = []
        write_steps, write_epochs = (
            metric_writes.write_step_columns,
            metric_writes.write_epoch_batch,
        )

        def write_step_columns(session: Any, columns: Any, **options: Any) -> int:
            self.fresh.append(options.get("fresh", True))
            return write_steps(session, columns, **options)

        def write_epoch_batch(session: Any, batch: Any) -> int:
            if self.failed < self.failures or (not self.failures and not self.over.is_set()):
                self.failed += 1
                lose_the_connection(session)
            return write_epochs(session, batch)

        monkeypatch.setattr(metric_writes, "write_step_columns", write_step_columns)
        monkeypatch.setattr(metric_writes, "write_epoch_batch", write_epoch_batch)


def retries_counted() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("optbench_metric_write_retries_total") or 0.0


def test_a_write_failing_transiently_is_retried_and_stores_every_row_once_in_order(
    database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    outage = Outage(monkeypatch, failures=3)
    first, second = lecture_runs(2)
    counted = retries_counted()
    sink = SqlSink(linger=0.0, retry_delays=(0.01, 0.04))
    with caplog.at_level(logging.WARNING, "workers.sinks.writer"):
        for run in (first, second):
            sink.on_run_start(run, 40)
        for start in range(1, 41, 10):
            sink.on_flush([(run, steps(start, start + 9)) for run in (first, second)])
            for run in (first, second):
                sink.on_epochs(run, [epoch(1 + start // 10)])
        for run in (first, second):
            sink.on_run_end(run, a_result(40))
            assert stored_steps(run.key) == list(range(1, 41))  # before the run ends
        sink.close()

    assert outage.failed == 3 and sink.stats.retries == 3
    assert retries_counted() - counted == 3
    # Each failed try had advanced the hint of steps stored; restored, the retry still takes
    # the direct path, and nothing was stored twice or skipped.
    assert all(outage.fresh)
    assert (sink.stats.step_rows, sink.stats.epoch_rows, sink.stats.duplicates) == (80, 8, 0)
    with unit_of_work() as session:
        epochs = metric_queries.series(session, keys([first, second]), "epoch")
        ended = [session.get_one(Run, run.key) for run in (first, second)]
        assert session.scalar(select(func.count()).select_from(StepMetric)) == 80
    assert [e["epoch"] for e in epochs.values()] == [[1, 2, 3, 4]] * 2
    assert {(run.status, run.steps_done) for run in ended} == {("succeeded", 40)}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("cannot be reached" in r.getMessage() for r in warnings) == 3
    assert "stored after 3 retries" in warnings[-1].getMessage()
    assert "127.0.0.1" not in caplog.text and "postgres@" not in caplog.text


def test_a_commit_whose_answer_was_lost_is_retried_without_storing_twice(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection broke after COMMIT reached the server: the rows are stored, but the
    writer cannot know. The retry writes them again; their keys make it a no-op."""
    from collections.abc import Iterator
    from contextlib import contextmanager

    import psycopg
    from sqlalchemy.exc import OperationalError

    import workers.sinks.sql as sql_module

    original = sql_module.unit_of_work
    lost = []

    @contextmanager
    def unit_of_work_losing_the_first_answer(*engine: Any) -> Iterator[Any]:
        with original(*engine) as session:
            yield session
        if not lost:  # committed
            lost.append(True)
            raise OperationalError("COMMIT", None, psycopg.OperationalError("connection lost"))

    monkeypatch.setattr(sql_module, "unit_of_work", unit_of_work_losing_the_first_answer)
    (run,) = lecture_runs(1)
    with SqlSink(linger=5.0, retry_delays=(0.01, 0.01)) as sink:  # one transaction
        sink.on_run_start(run, 30)
        sink.on_flush([(run, steps(1, 30))])
        sink.on_epochs(run, [epoch(1)])
        sink.on_run_end(run, a_result(30))
    assert lost and sink.stats.retries == 1
    assert stored_steps(run.key) == list(range(1, 31))
    assert (sink.stats.step_rows, sink.stats.duplicates) == (0, 31)  # 30 steps, 1 epoch
    with unit_of_work() as session:
        assert session.get_one(Run, run.key).status == "succeeded"


def test_an_error_that_is_not_the_connection_is_raised_at_once(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OperationalError too, but of the statement (PostgreSQL: a statement timeout;
    SQLite: a missing table): retrying cannot help."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    def failing_statement(session: Any, batch: Any) -> int:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SET LOCAL statement_timeout = '10ms'"))
            session.execute(text("SELECT pg_sleep(1)"))
        else:
            session.execute(text("SELECT * FROM no_such_table"))
        return 0

    monkeypatch.setattr(metric_writes, "write_epoch_batch", failing_statement)
    (run,) = lecture_runs(1)
    sink = SqlSink(linger=5.0, retry_seconds=60, retry_delays=(0.5, 0.5))  # one transaction
    sink.on_flush([(run, steps(1, 10))])
    sink.on_epochs(run, [epoch(1)])
    started = time.monotonic()
    with pytest.raises(OperationalError):
        sink.flush()
    assert time.monotonic() - started < 0.5 and sink.stats.retries == 0
    with pytest.raises(OperationalError):
        sink.close()
    assert stored_steps(run.key) == []


def test_a_database_away_longer_than_the_retry_time_fails_the_training(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    outage = Outage(monkeypatch)  # until outage.over is set: never
    (run,) = lecture_runs(1)
    sink = SqlSink(linger=5.0, retry_seconds=0.5, retry_delays=(0.05, 0.2))
    started = time.monotonic()
    sink.on_flush([(run, steps(1, 10))])
    sink.on_epochs(run, [epoch(1)])
    with pytest.raises(OperationalError) as raised:
        sink.flush()
    waited = time.monotonic() - started
    assert 0.5 <= waited < 1.5
    assert sink.stats.retries >= 3 and outage.failed == sink.stats.retries + 1
    for call in (lambda: sink.on_flush([(run, steps(11, 20))]), sink.close):
        with pytest.raises(OperationalError) as again:
            call()
        assert again.value is raised.value
    assert stored_steps(run.key) == []


def test_while_the_database_is_away_training_queues_until_the_queue_is_full(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage(monkeypatch)
    (run,) = lecture_runs(1)
    sink = SqlSink(max_pending_rows=50, linger=5.0, retry_delays=(0.02, 0.05))
    sink.on_flush([(run, steps(1, 30))])
    sink.on_epochs(run, [epoch(1)])
    sink.on_flush([(run, steps(31, 49))])  # 50 rows pending: the limit
    training = threading.Thread(target=sink.on_flush, args=([(run, steps(50, 60))],))
    training.start()
    training.join(0.5)
    assert training.is_alive()  # waits for room, nothing dropped
    assert sink._writer.pending_rows == 50 and sink.stats.retries >= 3
    outage.over.set()  # the database is back
    training.join(5)
    assert not training.is_alive()
    sink.on_run_end(run, a_result(60))
    sink.close()
    assert stored_steps(run.key) == list(range(1, 61))
    assert sink.stats.duplicates == 0


def test_only_a_connection_that_failed_or_broke_is_transient(postgres_db: str) -> None:
    import psycopg
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from services.db.session import get_engine, make_engine
    from services.db.transient import describe, is_transient
    from tests.support import free_port

    def error_of(engine: Any, *statements: str) -> DBAPIError:
        with pytest.raises(DBAPIError) as raised, engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
        return raised.value

    closed_port = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    refused = error_of(closed_port, "SELECT 1")
    terminated = error_of(get_engine(), "SELECT pg_terminate_backend(pg_backend_pid())")
    timed_out = error_of(get_engine(), "SET LOCAL statement_timeout = 1", "SELECT pg_sleep(1)")
    syntax = error_of(get_engine(), "SELEC 1")
    sqlite = error_of(make_engine("sqlite://"), "SELECT * FROM no_such_table")

    assert is_transient(refused) and is_transient(refused.orig)  # type: ignore[arg-type]
    assert is_transient(terminated) and describe(terminated) == "AdminShutdown (SQLSTATE 57P01)"
    assert not is_transient(timed_out)  # QueryCanceled: an OperationalError of the statement
    assert not is_transient(syntax) and not is_transient(sqlite)
    assert is_transient(psycopg.errors.CannotConnectNow("the database system is starting up"))
    assert not is_transient(ValueError("not a database error"))
    assert describe(refused) == "OperationalError"  # no host, no port


def test_retry_pauses_double_from_the_first_delay_to_the_longest_each_jittered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg

    from workers.sinks.writer import BatchWriter, WriterStats

    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    failures = iter(range(7))

    def write(items: Any) -> None:
        if next(failures, None) is not None:
            raise psycopg.OperationalError("connection refused")  # transient

    stats = WriterStats()
    writer: BatchWriter[int] = BatchWriter(
        write,
        lambda item: 1,
        max_pending_rows=10,
        max_batch_rows=10,
        linger=0.0,
        retry_seconds=1000.0,
        retry_delays=(0.5, 10.0),
        stats=stats,
        name="test-writer",
    )
    writer.write_retrying([1])
    assert stats.retries == 7
    for pause, delay in zip(pauses, [0.5, 1, 2, 4, 8, 10, 10], strict=True):
        assert delay / 2 <= pause <= delay


def test_rows_stored_behind_the_writers_back_abort_the_direct_copy_and_go_through_staging(
    postgres_db: str,
) -> None:
    """The writer COPYs rows it believes new without a savepoint; when they are stored
    already (here: by another session after the run started, as a commit whose answer was
    lost leaves them), that transaction is written again with the rows staged: each stored
    once, the duplicates counted, the rollup and steps_done right."""
    import psycopg

    (run,) = lecture_runs(1)
    statements: list[str] = []
    original = psycopg.Cursor.execute

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(query))
        return original(self, query, *args, **kwargs)

    with SqlSink() as sink:
        sink.on_run_start(run, 40)
        sink.flush()
        with unit_of_work() as session:  # behind the writer's back
            metric_writes.write_steps(session, run.key, [row(r) for r in records(1, 30)])
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        try:
            sink.on_flush([(run, steps(1, 40))])
            sink.flush()
        finally:
            psycopg.Cursor.execute = original  # type: ignore[method-assign]
    assert stored_steps(run.key) == list(range(1, 41))
    assert (sink.stats.step_rows, sink.stats.duplicates) == (10, 30)
    assert not any("SAVEPOINT" in s for s in statements)
    with unit_of_work() as session:
        assert session.get_one(Run, run.key).steps_done == 40
        (block,) = session.scalars(select(StepRollup).where(StepRollup.run_id == run.key))
    assert (block.first_step, block.last_step, block.loss_last) == (1, 40, 1.0 / 40)


def test_the_writer_pings_no_connection_and_replaces_one_that_died_between_writes(
    postgres_db: str,
) -> None:
    """The writer's engine has no pre-ping (a round trip per transaction): a pooled
    connection that the server ended while idle fails the next write's first statement, a
    transient error; the retry takes a new connection and every row is stored once."""
    from sqlalchemy import text

    from services.db.session import get_engine, get_writer_engine

    assert get_writer_engine() is not get_engine()
    assert not get_writer_engine().pool._pre_ping and get_engine().pool._pre_ping  # type: ignore[attr-defined]
    (run,) = lecture_runs(1)
    with SqlSink(retry_delays=(0.01, 0.01)) as sink:
        sink.on_run_start(run, 40)
        sink.on_flush([(run, steps(1, 20))])
        sink.flush()
        # The writer is idle: its pool's one connection is what this checks out (and returns).
        with get_writer_engine().connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with get_engine().connect() as connection:
            query = text("SELECT pg_terminate_backend(:pid)")
            assert connection.execute(query, {"pid": pid}).scalar_one()
        sink.on_flush([(run, steps(21, 40))])
        sink.on_run_end(run, a_result(40))
    assert sink.stats.retries == 1
    assert stored_steps(run.key) == list(range(1, 41))
    with unit_of_work() as session:
        assert session.get_one(Run, run.key).status == "succeeded"

"""Metric writes: batched, idempotent, on SQLite and on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select

from services.db import metric_queries, metric_writes, store
from services.db.models import STEP_FIELDS, Run, StepMetric
from services.db.session import unit_of_work
from services.spec import LECTURE_SPEC, JobSpec
from workers.engine import EpochRecord, OptimizerConfig, RunConfig, RunResult, StepRecord
from workers.sinks.sql import SqlSink


def a_run_id() -> int:
    with unit_of_work() as session:
        job = store.create_job(session, JobSpec.model_validate(LECTURE_SPEC))
        return job.runs[1].id


def steps(first: int, last: int) -> list[StepRecord]:
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
                [{k: getattr(r, k) for k in STEP_FIELDS} for r in steps(1, 500)],
            )
    finally:
        event.remove(get_engine(), "before_cursor_execute", listener)
    # on PostgreSQL a WITH ... INSERT (that also feeds step_rollup)
    inserts = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "WITH"))]
    assert written == 500 and len(inserts) == 1
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(StepMetric)) == 500

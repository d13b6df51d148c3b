"""Metric writes on SQLite and on PostgreSQL: idempotent, counted, NULLs and non-finite
numbers kept straight, and a flush is a fixed handful of statements whatever its size."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from services.db import metric_writes, store
from services.db.models import EPOCH_FIELDS, STEP_FIELDS, EpochMetric, Run, StepMetric
from services.db.session import get_engine, unit_of_work
from services.spec import LECTURE_SPEC, JobSpec


def run_ids(count: int = 2) -> list[int]:
    with unit_of_work() as session:
        job = store.create_job(session, JobSpec.model_validate(LECTURE_SPEC))
        return [run.id for run in job.runs[:count]]


def step_rows(first: int, last: int, **overrides: Any) -> list[dict[str, Any]]:
    rows = []
    for s in range(first, last + 1):
        row: dict[str, Any] = {
            "step": s,
            "epoch": 1 + (s - 1) // 10,
            "loss": 1.0 / s,
            "accuracy": 0.5,
            "lr": 0.05,
            "grad_norm": 0.1,
            "train_seconds": 0.01 * s,
            "x": None,
            "y": None,
            "val_loss": None,
            "val_accuracy": None,
        }
        row.update(overrides)
        rows.append(row)
    return rows


def write(run_id: int, rows: list[dict[str, Any]]) -> int:
    with unit_of_work() as session:
        return metric_writes.write_steps(session, run_id, rows)


def stored(run_id: int) -> list[tuple[Any, ...]]:
    with unit_of_work() as session:
        return [
            tuple(row)
            for row in session.execute(
                select(*(getattr(StepMetric, f) for f in STEP_FIELDS))
                .where(StepMetric.run_id == run_id)
                .order_by(StepMetric.step)
            )
        ]


def steps_done(run_id: int) -> int:
    with unit_of_work() as session:
        return session.get_one(Run, run_id).steps_done


def test_rewriting_overlapping_flushes_stores_each_row_once_and_counts_new_rows(
    database: str,
) -> None:
    run_id, other = run_ids()
    assert write(run_id, step_rows(1, 20)) == 20
    assert write(run_id, step_rows(11, 30)) == 10  # a redelivered task repeats 11..20
    assert write(run_id, step_rows(1, 30)) == 0
    assert write(run_id, step_rows(31, 31) * 3) == 1  # repeated within one flush
    assert write(other, step_rows(1, 5)) == 5  # the same steps of another run are new
    assert write(run_id, []) == 0

    rows = stored(run_id)
    assert [row[0] for row in rows] == list(range(1, 32))
    assert rows == [tuple(r.values()) for r in step_rows(1, 31)]  # the first write wins
    assert len(stored(other)) == 5


def test_a_rewrite_keeps_the_stored_values(database: str) -> None:
    (run_id,) = run_ids(1)
    write(run_id, step_rows(1, 3))
    assert write(run_id, step_rows(1, 3, loss=99.0)) == 0
    assert {row[2] for row in stored(run_id)} == {1.0, 0.5, 1.0 / 3}


def test_steps_done_advances_monotonically(database: str) -> None:
    (run_id,) = run_ids(1)
    write(run_id, step_rows(1, 50))
    assert steps_done(run_id) == 50
    write(run_id, step_rows(1, 20))  # redelivered older steps do not move it back
    assert steps_done(run_id) == 50
    write(run_id, list(reversed(step_rows(51, 60))))  # the last step, not the last row
    assert steps_done(run_id) == 60
    with unit_of_work() as session:  # a Run the session holds sees the new value
        run = session.get_one(Run, run_id)
        assert run.steps_done == 60
        metric_writes.write_steps(session, run_id, step_rows(61, 70))
        assert run.steps_done == 70


def test_none_and_missing_columns_are_null_and_values_round_trip(database: str) -> None:
    (run_id,) = run_ids(1)
    rows = step_rows(1, 4, accuracy=None)
    rows[1].update(x=-1.5, y=2.25)
    rows[2].update(val_loss=0.75, val_accuracy=0.875)
    sparse = [  # the optional keys left out altogether
        {k: v for k, v in row.items() if k not in ("x", "y", "val_loss", "val_accuracy")}
        for row in step_rows(5, 6)
    ]
    assert write(run_id, rows) == 4
    assert write(run_id, sparse) == 2
    got = stored(run_id)
    assert got[:4] == [tuple(r.values()) for r in rows]
    assert got[4:] == [tuple(r.values()) for r in step_rows(5, 6)]

    epochs: list[dict[str, Any]] = [
        {
            "epoch": 1,
            "step": 10,
            "train_loss": 0.5,
            "train_accuracy": None,
            "val_loss": 0.6,
            "val_accuracy": None,
            "train_seconds": 0.1,
            "distance": None,
        },
        {
            "epoch": 2,
            "step": 20,
            "train_loss": 0.25,
            "train_accuracy": 0.9,
            "val_loss": 0.3,
            "val_accuracy": 0.8,
            "train_seconds": 0.2,
            "distance": 1e-3,
        },
    ]
    with unit_of_work() as session:
        assert metric_writes.write_epochs(session, run_id, epochs) == 2
        assert metric_writes.write_epochs(session, run_id, epochs) == 0  # same transaction
    with unit_of_work() as session:
        got_epochs = session.execute(
            select(*(getattr(EpochMetric, f) for f in EPOCH_FIELDS))
            .where(EpochMetric.run_id == run_id)
            .order_by(EpochMetric.epoch)
        ).all()
    assert [tuple(row) for row in got_epochs] == [tuple(e.values()) for e in epochs]


def test_integers_in_float_columns_and_infinities_are_stored(database: str) -> None:
    (run_id,) = run_ids(1)
    rows = step_rows(1, 3)
    rows[0].update(loss=1, accuracy=0, lr=1, grad_norm=0)  # ints where floats are expected
    rows[1].update(loss=math.inf, x=-math.inf)
    rows[2].update(val_loss=math.nan)  # NaN in an optional column: stored as NULL
    assert write(run_id, rows) == 3
    first, second, third = stored(run_id)
    assert first[2:6] == (1.0, 0.0, 1.0, 0.0)
    assert (second[2], second[7]) == (math.inf, -math.inf)
    assert third[9] is None


def test_nan_in_a_required_column_is_refused_on_both_databases(database: str) -> None:
    (run_id,) = run_ids(1)
    with pytest.raises(IntegrityError):
        write(run_id, step_rows(1, 2, loss=math.nan))
    assert stored(run_id) == [] and steps_done(run_id) == 0  # the whole flush rolled back
    assert write(run_id, step_rows(1, 2)) == 2  # and the next flush works


def test_flushes_of_several_runs_in_one_transaction_stay_apart(database: str) -> None:
    first, second = run_ids()
    with unit_of_work() as session:
        assert metric_writes.write_steps(session, first, step_rows(1, 10)) == 10
        assert metric_writes.write_steps(session, second, step_rows(1, 3)) == 3
        assert metric_writes.write_steps(session, first, step_rows(11, 12)) == 2
    assert [row[0] for row in stored(first)] == list(range(1, 13))
    assert [row[0] for row in stored(second)] == [1, 2, 3]


def test_a_rolled_back_flush_leaves_the_next_one_working(database: str) -> None:
    (run_id,) = run_ids(1)
    # On PostgreSQL the first flush of a connection creates its staging table; rolled back,
    # the table is gone again, and the next flush on that pooled connection must notice.
    with pytest.raises(RuntimeError), unit_of_work() as session:
        metric_writes.write_steps(session, run_id, step_rows(1, 5))
        raise RuntimeError("the task failed after the flush")
    assert stored(run_id) == []
    assert write(run_id, step_rows(1, 5)) == 5
    assert write(run_id, step_rows(1, 6)) == 1


@contextmanager
def counted_statements(database: str) -> Iterator[list[str]]:
    """Every statement sent to the database: on PostgreSQL each psycopg execute, executemany
    and copy (SQLAlchemy's and the raw ones); on SQLite each statement SQLAlchemy runs (an
    executemany counts once: SQLite steps one prepared statement through its rows)."""
    import psycopg

    statements: list[str] = []
    if database == "sqlite":
        listener = lambda conn, cursor, sql, *args: statements.append(sql)  # noqa: E731
        event.listen(get_engine(), "before_cursor_execute", listener)
        try:
            yield statements
        finally:
            event.remove(get_engine(), "before_cursor_execute", listener)
        return

    originals = {name: getattr(psycopg.Cursor, name) for name in ("execute", "executemany", "copy")}

    def counting(original: Any) -> Any:
        def call(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            statements.append(str(query))
            return original(self, query, *args, **kwargs)

        return call

    try:
        for name, original in originals.items():
            setattr(psycopg.Cursor, name, counting(original))
        yield statements
    finally:
        for name, original in originals.items():
            setattr(psycopg.Cursor, name, original)


def test_a_flush_takes_the_same_few_statements_whatever_its_size(database: str) -> None:
    (run_id,) = run_ids(1)
    write(run_id, step_rows(1, 1))  # warm up: the pooled connection exists
    counts = {}
    for first, size in ((2, 2), (4, 1000)):
        with counted_statements(database) as statements:
            assert write(run_id, step_rows(first, first + size - 1)) == size
        counts[size] = statements
    assert len(counts[1000]) == len(counts[2]) <= 6, counts[1000]
    statements = counts[1000]
    if database == "postgresql":  # new rows: COPY straight in, then rollup and steps_done
        assert [s for s in statements if "step_metric" in s] == [
            s for s in statements if s.startswith("COPY step_metric ")
        ]
        assert len([s for s in statements if "step_metric" in s]) == 1
        (rest,) = [s for s in statements if s.startswith("WITH")]
        assert "INSERT INTO step_rollup" in rest and "UPDATE run" in rest
    else:  # one executemany insert, one executemany update of steps_done
        assert [s.split()[0] for s in statements] == ["INSERT", "UPDATE"], statements
    assert len(stored(run_id)) == 1003


def test_rows_that_may_be_stored_take_the_staging_path_in_as_few_statements(
    postgres_db: str,
) -> None:
    (run_id,) = run_ids(1)
    write(run_id, step_rows(1, 10))
    with counted_statements("postgresql") as statements, unit_of_work() as session:
        batch = [(run_id, step_rows(5, 1000))]
        assert metric_writes.write_step_batch(session, batch, fresh=False) == 990
    writes = [s for s in statements if "step_metric" in s and not s.startswith("CREATE")]
    assert [w.split()[0] for w in writes] == ["COPY", "WITH"], writes  # staged, then inserted
    assert "FROM pg_temp." in writes[1] and "ON CONFLICT DO NOTHING" in writes[1]
    assert not any(s.startswith("SAVEPOINT") for s in statements)  # no attempt at COPY first
    assert len(stored(run_id)) == 1000 and steps_done(run_id) == 1000


def test_a_copy_that_meets_stored_rows_falls_back_and_stores_only_new_ones(
    postgres_db: str,
) -> None:
    (run_id,) = run_ids(1)
    write(run_id, step_rows(1, 10))
    with counted_statements("postgresql") as statements:
        assert write(run_id, step_rows(8, 20)) == 10  # fresh by default: COPY tried first
    assert [s.split()[0] for s in statements if "step_metric" in s and "CREATE" not in s] == [
        "COPY",  # straight in: a unique violation, rolled back to the savepoint
        "COPY",  # into staging
        "WITH",  # insert from staging
    ]
    assert "ROLLBACK TO SAVEPOINT optbench_new_rows" in statements
    assert [row[0] for row in stored(run_id)] == list(range(1, 21))
    assert steps_done(run_id) == 20


def test_one_batch_stores_the_rows_of_several_runs_in_one_copy(database: str) -> None:
    first, second = run_ids()
    with counted_statements(database) as statements, unit_of_work() as session:
        batch = [(first, step_rows(1, 40)), (second, step_rows(1, 25)), (first, step_rows(41, 50))]
        assert metric_writes.write_step_batch(session, batch) == 75
        epochs = [(first, [epoch_row(1), epoch_row(2)]), (second, [epoch_row(1)])]
        assert metric_writes.write_epoch_batch(session, epochs) == 3
        assert metric_writes.write_epoch_batch(session, epochs) == 0  # again: nothing new
    inserts = [s for s in statements if s.startswith(("COPY", "INSERT"))]
    assert len(inserts) == (1 if database == "postgresql" else 3), inserts
    assert [row[0] for row in stored(first)] == list(range(1, 51))
    assert [row[0] for row in stored(second)] == list(range(1, 26))
    assert (steps_done(first), steps_done(second)) == (50, 25)
    with unit_of_work() as session:
        counted = session.execute(
            select(EpochMetric.run_id, EpochMetric.epoch).order_by(
                EpochMetric.run_id, EpochMetric.epoch
            )
        ).all()
    assert [tuple(row) for row in counted] == [(first, 1), (first, 2), (second, 1)]


def test_rows_given_as_objects_store_as_mappings_do(database: str) -> None:
    @dataclass(frozen=True)
    class Record:  # like the engine's StepRecord: fields as attributes
        step: int
        epoch: int
        loss: float
        accuracy: float | None
        lr: float
        grad_norm: float
        train_seconds: float
        x: float | None = None
        y: float | None = None
        val_loss: float | None = None
        val_accuracy: float | None = None
        samples: int = 64  # not stored

    first, second = run_ids()
    rows = step_rows(1, 30)
    rows[3].update(val_loss=0.25, accuracy=None)
    records = [Record(**row) for row in rows]
    with unit_of_work() as session:
        assert metric_writes.write_step_batch(session, [(first, records)]) == 30
    write(second, rows)
    assert stored(first) == stored(second) == [tuple(r.values()) for r in rows]


def test_values_numpy_cannot_hold_exactly_still_store_or_fail_as_the_database_says(
    database: str,
) -> None:
    (run_id,) = run_ids(1)
    if database == "postgresql":  # SQLite's integers have 64 bits
        big = step_rows(1, 2)
        big[1]["step"] = 2**31  # beyond int4: the database refuses it
        with pytest.raises(DBAPIError):
            write(run_id, big)
    mixed = step_rows(1, 3)
    mixed[1]["epoch"] = True  # a bool where an int goes: stored as 1
    assert write(run_id, mixed) == 3
    assert [row[1] for row in stored(run_id)] == [1, 1, 1]
    missing = step_rows(4, 5)
    missing[0]["epoch"] = None  # NULL in a required integer column
    with pytest.raises(IntegrityError):
        write(run_id, missing)
    assert len(stored(run_id)) == 3 and steps_done(run_id) == 3


def epoch_row(epoch: int) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "step": 10 * epoch,
        "train_loss": 1.0 / epoch,
        "train_accuracy": None,
        "val_loss": 2.0 / epoch,
        "val_accuracy": 0.5,
        "train_seconds": 0.1 * epoch,
        "distance": None,
    }


@dataclass(frozen=True)
class Arrays:
    """A run's steps as one numpy array per field, as the engine hands them to sinks."""

    step: Any
    epoch: Any
    loss: Any
    accuracy: Any
    lr: Any
    grad_norm: Any
    train_seconds: Any
    x: Any
    y: Any
    val_loss: Any
    val_accuracy: Any


def arrays(rows: list[dict[str, Any]]) -> Arrays:
    import numpy as np

    def column(field: str) -> Any:
        values = [row[field] for row in rows]
        if field in ("step", "epoch"):
            return np.array(values, dtype=np.int64)
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

    return Arrays(**{field: column(field) for field in STEP_FIELDS})


def write_columns(batch: list[tuple[int, Arrays]], **options: Any) -> int:
    with unit_of_work() as session:
        columns = metric_writes.step_columns(batch)
        return metric_writes.write_step_columns(session, columns, **options)


def test_step_columns_store_as_rows_do(database: str) -> None:
    first, second = run_ids()
    rows = step_rows(1, 30)
    rows[3].update(val_loss=0.25, accuracy=None, x=math.inf)
    assert write_columns([(first, arrays(rows[:10])), (first, arrays(rows[10:]))]) == 30
    write(second, rows)
    assert stored(first) == stored(second) == [tuple(r.values()) for r in rows]
    assert steps_done(first) == 30
    # Rewritten, on the direct path or through staging: nothing new.
    assert write_columns([(first, arrays(step_rows(21, 40)))]) == 10
    assert write_columns([(first, arrays(step_rows(1, 40)))], fresh=False) == 0
    assert steps_done(first) == 40 and len(stored(first)) == 40
    assert write_columns([]) == 0


def test_step_columns_that_do_not_fit_fail_as_the_database_says(database: str) -> None:
    (run_id,) = run_ids(1)
    missing = step_rows(1, 3)
    missing[1]["loss"] = None  # NaN in a required column: NULL, refused
    with pytest.raises(IntegrityError):
        write_columns([(run_id, arrays(missing))])
    if database == "postgresql":  # SQLite's integers have 64 bits
        big = arrays(step_rows(1, 2))
        big.step[1] = 2**31  # beyond int4: not wrapped by the encoding, refused
        with pytest.raises(DBAPIError):
            write_columns([(run_id, big)])
    assert stored(run_id) == [] and steps_done(run_id) == 0

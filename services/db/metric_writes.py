"""Metric rows: batched, idempotent writes, several runs at a time.

A flush is a fixed handful of statements in the caller's transaction whatever its size and
however many runs it holds, never a statement per row or per run (mlflow#4299 is the mistake
not to repeat). Rewriting a stored (run_id, step) or (run_id, epoch) changes nothing, so a
redelivered task cannot duplicate a row. Step rows come as one ``Columns`` of several runs
(``write_step_columns``: the SQL sink's path, built from the engine's arrays with
``step_columns``) or as ``(run_id, rows)`` pairs (``write_step_batch``, ``write_steps``:
mappings, tuples in the fields' order, or objects with the fields as attributes, read into
columns once per field). Epoch rows (a few per flush) come as pairs (``write_epoch_batch``,
``write_epochs``). Nothing after the columns loops over rows in Python (metric_columns.py).

PostgreSQL (psycopg 3), step rows, two paths:

- New rows (the usual case: training appends steps): one binary ``COPY`` straight into
  ``step_metric`` of every run's rows, inside a savepoint, then one statement that merges
  the flush's rollup blocks (computed with numpy, metric_rollup.py) into ``step_rollup``
  and, in a data-modifying CTE, advances every run's ``steps_done``. Taken when the rows
  (sorted by run and step first) hold no key twice, their steps count from 1, their
  required values are present, and the caller does not know some of them to be stored
  already (``fresh=False``). If the ``COPY`` still hits a stored key (a redelivered task)
  or any other integrity error, the savepoint is rolled back and the rows take the second
  path, which decides (and raises SQLAlchemy's ``IntegrityError`` where the rows are bad).
- Maybe-stored rows: the same ``COPY`` into a session-local staging table (``pg_temp``,
  ``ON COMMIT DELETE ROWS``; created if missing and emptied first, in one round trip: one
  created in a transaction that rolled back is gone, and a second flush in one transaction
  must not see the first one's rows), then one ``INSERT INTO step_metric ... SELECT ... FROM
  staging ON CONFLICT DO NOTHING RETURNING`` whose stored rows feed, in CTEs of the same
  statement, the rollup (aggregated by the database) and ``steps_done``. Only rows actually
  stored reach the rollup, so it always equals an aggregation of ``step_metric``.

Epoch rows are one ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING``. Array
parameters are encoded by numpy in PostgreSQL's binary array format (``BinaryArray``).
SQLite: one ``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING`` for all runs' rows, one
for ``steps_done``; no rollup. Why the two PostgreSQL paths, and what they cost:
docs/performance.md, "Storing every step".

The write functions return the number of *new* rows; the number of rows given minus that
were skipped as already stored (or repeated within the flush).

Non-finite numbers: ±inf is stored as is on both databases. NaN becomes NULL (SQLite has no
NaN, and PostgreSQL is made to agree), so a NaN in a required column (loss, lr, ...) is an
``IntegrityError`` on both. The engine never sends one (a diverged step is not recorded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import Connection
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from services.db import metric_statements as statements
from services.db.metric_columns import (
    BinaryArray,
    Columns,
    Rows,
    copy_payload,
    row_values,
    send_binary_arrays,
)
from services.db.metric_rollup import block_arrays, rollup_insert
from services.db.models import Run

__all__ = [
    "RowsNotNew",
    "rollup_insert",
    "step_columns",
    "write_epoch_batch",
    "write_epochs",
    "write_step_batch",
    "write_step_columns",
    "write_steps",
]

RunRows = tuple[int, Rows]  # (run id, its rows)


class _Batch:
    """One flush's rows of one table: numpy columns (``columns``) where the binary encoding
    holds them exactly, else tuples of Python values that the database judges row by row."""

    def __init__(
        self, table: statements.Table, columns: Columns | None, runs: Sequence[RunRows]
    ) -> None:
        self.table = table
        self.every = columns  # all rows as columns, encodable or not; None: only ``runs``
        self.columns = columns if columns is not None and columns.fits() else None
        self.runs = runs  # the rows as given, where numpy could not read them

    @classmethod
    def of_rows(cls, table: statements.Table, batch: Sequence[RunRows]) -> _Batch:
        runs = [(run_id, rows) for run_id, rows in batch if rows]
        columns = Columns.from_rows(table.fields, table.kinds, runs) if runs else None
        return cls(table, columns, () if columns is not None else runs)

    def __len__(self) -> int:
        if self.every is not None:
            return len(self.every)
        return sum(len(rows) for _, rows in self.runs)

    def run_ids(self) -> list[int]:
        if self.every is not None:
            return np.unique(self.every.run_id).tolist()
        return list({run_id for run_id, _ in self.runs})

    def tuples(self) -> list[tuple[Any, ...]]:
        """(run_id, *values) per row (NaN for NULL is fine: both databases store NULL)."""
        if self.every is not None:
            return self.every.rows()
        fields = self.table.fields
        return [(run_id, *row_values(row, fields)) for run_id, rows in self.runs for row in rows]

    def last_steps(self) -> tuple[list[int], list[int]]:
        """Run ids and each one's largest step in the flush."""
        if self.every is not None:
            ids, lasts = self.every.last_steps()
            return ids.tolist(), lasts.tolist()
        found: dict[int, int] = {}
        fields, at = self.table.fields, self.table.fields.index("step")
        for run_id, rows in self.runs:  # what is not an int fails in the insert
            steps = [row_values(row, fields)[at] for row in rows]
            steps = [step for step in steps if type(step) is int]
            if steps:
                found[run_id] = max(*steps, found.get(run_id, steps[0]))
        return list(found), list(found.values())

    def advance(self) -> tuple[BinaryArray, BinaryArray]:
        """The parameters that advance ``steps_done``: run ids and their last steps."""
        ids, lasts = self.last_steps()
        return BinaryArray.of("int8", np.array(ids)), BinaryArray.of("int4", np.array(lasts))


def _connection(session: Session) -> tuple[Connection, str]:
    session.flush()  # rows may reference a run added to this session but not yet flushed
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        return connection, "postgresql"
    if dialect.name == "sqlite":
        return connection, "sqlite"
    raise NotImplementedError(  # pragma: no cover
        f"metric writes support SQLite and PostgreSQL with psycopg 3 "
        f"(postgresql+psycopg://), not {dialect.name}+{dialect.driver}"
    )


def _driver(connection: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under this SQLAlchemy one (same transaction)."""
    driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
    return send_binary_arrays(driver)


def _copy(cursor: psycopg.Cursor[Any], statement: str, batch: _Batch, rows: Columns | None) -> None:
    with cursor.copy(statement) as copy:
        if rows is not None:
            copy.write(copy_payload(rows))
            return
        copy.set_types(["int8", *batch.table.kinds])
        for row in batch.tuples():
            copy.write_row(row)


class RowsNotNew(Exception):
    """The direct ``COPY`` of ``write_step_columns(..., savepoint=False)`` met a stored key
    (or another integrity error): the transaction is aborted and must be rolled back; write
    the rows again in a new one with ``fresh=False``, where the staging path decides."""


def _copy_new_steps(connection: Connection, batch: _Batch, savepoint: bool) -> bool:
    """COPY the rows straight into step_metric, then the rollup and steps_done; False (and
    nothing written) if they are not all new. Without ``savepoint``, a COPY that hits a
    stored key raises ``RowsNotNew`` instead (the transaction is lost with it)."""
    rows = (
        batch.columns.insertable(statements.STEPS.required) if batch.columns is not None else None
    )
    if rows is None:
        return False
    with _driver(connection).cursor() as cursor:
        if savepoint:
            cursor.execute("SAVEPOINT optbench_new_rows")
        try:
            _copy(cursor, statements.STEPS.pg_copy, batch, rows)
        except psycopg.errors.IntegrityError as error:  # a stored key, or a bad row
            if not savepoint:
                raise RowsNotNew(str(error)) from error
            cursor.execute("ROLLBACK TO SAVEPOINT optbench_new_rows")  # staging decides
            return False
        if savepoint:
            cursor.execute("RELEASE SAVEPOINT optbench_new_rows")
    # Through SQLAlchemy, so that its events (tracing, tests) see the statement.
    connection.exec_driver_sql(
        statements.ROLLUP_AND_ADVANCE, (*batch.advance(), *block_arrays(rows))
    )
    return True


def _insert_via_staging(connection: Connection, batch: _Batch, parameters: tuple[Any, ...]) -> int:
    table = batch.table
    with _driver(connection).cursor() as cursor:
        # Emptied too: a second flush in one transaction must not see the first one's rows.
        cursor.execute(table.pg_stage)
        _copy(cursor, table.pg_copy_staged, batch, batch.columns)
    return int(connection.exec_driver_sql(table.pg_from_staging, parameters).scalar_one())


def _executemany_sqlite(connection: Connection, batch: _Batch) -> int:
    result = connection.exec_driver_sql(
        batch.table.sqlite_insert,
        batch.tuples(),
        execution_options={"preserve_rowcount": True},
    )
    return max(result.rowcount, 0)  # executemany sums the rows each execution inserted


def step_columns(batch: Sequence[tuple[int, Any]]) -> Columns:
    """Step rows of several runs as ``write_step_columns`` takes them: ``(run_id, arrays)``
    pairs, ``arrays`` with each of ``STEP_FIELDS`` as a numpy array attribute (the engine's
    ``StepColumns``), concatenated (``Columns.of_arrays``)."""
    return Columns.of_arrays(statements.STEPS.fields, statements.STEPS.kinds, batch)


def write_step_columns(
    session: Session, columns: Columns, *, fresh: bool = True, savepoint: bool = True
) -> int:
    """Store step rows of several runs (``step_columns``) and advance each run's
    ``steps_done``, in the session's transaction. ``fresh=False``: the caller knows that
    some rows may be stored already, so the direct COPY is not tried. ``savepoint=False``
    (PostgreSQL): the direct COPY runs without the savepoint that lets a failed one fall
    back to staging in the same transaction (a savepoint and its release cost two round
    trips and ~10 % of a 1,000-row flush, docs/performance.md); if it fails, ``RowsNotNew``
    is raised and the caller writes the transaction again with ``fresh=False``.

    Returns the number of new rows; the rows given minus that were already stored.
    """
    if columns.fields != statements.STEPS.fields or columns.kinds != statements.STEPS.kinds:
        raise ValueError(f"step columns are {statements.STEPS.fields} of {statements.STEPS.kinds}")
    return _write_steps(session, _Batch(statements.STEPS, columns, ()), fresh, savepoint)


def write_step_batch(session: Session, batch: Sequence[RunRows], *, fresh: bool = True) -> int:
    """``write_step_columns`` for ``(run_id, rows)`` pairs (rows with the fields
    ``STEP_FIELDS``)."""
    return _write_steps(session, _Batch.of_rows(statements.STEPS, batch), fresh)


def _write_steps(session: Session, rows: _Batch, fresh: bool, savepoint: bool = True) -> int:
    if not len(rows):
        return 0
    connection, database = _connection(session)
    if database == "postgresql":
        if fresh and _copy_new_steps(connection, rows, savepoint):
            written = len(rows)
        else:
            written = _insert_via_staging(connection, rows, rows.advance())
    else:
        written = _executemany_sqlite(connection, rows)
        ids, lasts = rows.last_steps()
        connection.execute(
            statements.ADVANCE_STEPS_DONE,
            [{"run_id": i, "last": last} for i, last in zip(ids, lasts, strict=True)],
        )
    for run_id in rows.run_ids():
        loaded = session.identity_map.get(identity_key(Run, run_id))
        if loaded is not None:  # a Run this session holds shows the new value on next access
            session.expire(loaded, ["steps_done"])
    return written


def write_epoch_batch(session: Session, batch: Sequence[RunRows]) -> int:
    """Store epoch rows (fields ``EPOCH_FIELDS``) of several runs. Returns the number of new
    rows."""
    rows = _Batch.of_rows(statements.EPOCHS, batch)
    if not len(rows):
        return 0
    connection, database = _connection(session)
    if database == "sqlite":
        return _executemany_sqlite(connection, rows)
    if rows.columns is None:
        return _insert_via_staging(connection, rows, ())
    _driver(connection)
    arrays = zip(
        ("int8", *statements.EPOCHS.kinds), (rows.columns.run_id, *rows.columns.values), strict=True
    )
    parameters = tuple(BinaryArray.of(kind, array) for kind, array in arrays)
    return int(connection.exec_driver_sql(statements.EPOCHS_FROM_ARRAYS, parameters).scalar_one())


def write_steps(session: Session, run_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store step rows (keys: ``STEP_FIELDS``) of one run and advance its ``steps_done``.

    Returns the number of new rows; ``len(rows)`` minus that were already stored.
    """
    return write_step_batch(session, [(run_id, rows)])


def write_epochs(session: Session, run_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store epoch rows (keys: ``EPOCH_FIELDS``) of one run. Returns the number of new rows."""
    return write_epoch_batch(session, [(run_id, rows)])

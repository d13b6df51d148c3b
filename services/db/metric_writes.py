"""Metric rows: batched, idempotent writes.

A flush is one multi-row ``INSERT ... ON CONFLICT DO NOTHING`` per table (never a statement
per row: mlflow#4299 is the mistake not to repeat), so a redelivered task that writes the
same (run_id, step) again changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.db.models import EpochMetric, Run, StepMetric

# SQLite allows 32,766 bound parameters per statement; 8 columns x 2,000 rows stays under it.
_ROWS_PER_STATEMENT = 2000


def _insert_ignoring_duplicates(
    session: Session, table: type[StepMetric] | type[EpochMetric], rows: Sequence[Mapping[str, Any]]
) -> int:
    """Insert rows, skipping keys already stored. Returns the number of new rows."""
    dialect = session.get_bind().dialect.name
    written = 0
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = list(rows[start : start + _ROWS_PER_STATEMENT])
        if dialect == "postgresql":
            statement: Any = postgresql.insert(table).values(chunk).on_conflict_do_nothing()
        elif dialect == "sqlite":
            statement = sqlite.insert(table).values(chunk).on_conflict_do_nothing()
        else:  # pragma: no cover - other databases are not supported
            statement = insert(table).values(chunk)
        # rowcount of an INSERT is only kept when asked for (SQLAlchemy 2.0.28+).
        result = session.execute(statement, execution_options={"preserve_rowcount": True})
        written += max(result.rowcount, 0)  # type: ignore[attr-defined]
    return written


def write_steps(session: Session, run_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store step rows of one run and advance its ``steps_done``. Returns new rows."""
    if not rows:
        return 0
    written = _insert_ignoring_duplicates(
        session,
        StepMetric,
        [{"run_id": run_id, **row} for row in rows],
    )
    last = max(int(row["step"]) for row in rows)
    session.execute(
        update(Run).where(Run.id == run_id, Run.steps_done < last).values(steps_done=last)
    )
    return written


def write_epochs(session: Session, run_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    if not rows:
        return 0
    return _insert_ignoring_duplicates(
        session,
        EpochMetric,
        [{"run_id": run_id, **row} for row in rows],
    )

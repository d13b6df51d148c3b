"""The SQL of metric writes (services/db/metric_writes.py): per metric table, its columns,
their PostgreSQL types, and the statements that write it: the direct ``COPY``, the staging
table and the ``INSERT ... SELECT FROM staging ON CONFLICT DO NOTHING`` that feeds the rollup
and ``steps_done``, SQLite's insert. Built once, from the models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Float, Integer, bindparam, update

from services.db.metric_rollup import ROLLUP_UPSERT, rollup_insert
from services.db.models import (
    EPOCH_FIELDS,
    ROLLUP_FIELDS,
    STEP_FIELDS,
    EpochMetric,
    Run,
    StepMetric,
)


def _pg_type(column_type: Any) -> str:
    if isinstance(column_type, BigInteger):
        return "int8"
    if isinstance(column_type, Integer):
        return "int4"
    if isinstance(column_type, Float):
        return "float8"
    raise TypeError(f"no staging type for {column_type!r}")  # pragma: no cover


@dataclass(frozen=True)
class Table:
    """How rows of one metric table are written: columns, their PostgreSQL types, SQL."""

    name: str
    fields: tuple[str, ...]
    kinds: tuple[str, ...]  # PostgreSQL type per field
    required: tuple[str, ...]  # NOT NULL fields
    sqlite_insert: str
    pg_copy: str  # straight into the table
    pg_stage: str  # CREATE the staging table if this connection has none yet; empty it
    pg_copy_staged: str
    pg_from_staging: str  # INSERT ... SELECT FROM staging ON CONFLICT; selects the count


def _selected(fields: tuple[str, ...], kinds: tuple[str, ...]) -> str:
    """run_id and the fields as inserted: NULLIF(x, 'NaN') is NULL for NaN (PostgreSQL orders
    NaN equal to itself)."""
    return ", ".join(
        ["run_id"]
        + [
            f"NULLIF({field}, 'NaN')" if kind == "float8" else field
            for field, kind in zip(fields, kinds, strict=True)
        ]
    )


# Every run's steps_done up to its last step in the flush (never back): two array parameters.
_ADVANCE = (
    "UPDATE run SET steps_done = advance.last "
    "FROM unnest(%s, %s) AS advance(id, last) "
    "WHERE run.id = advance.id AND run.steps_done < advance.last"
)


def _table(model: type[StepMetric] | type[EpochMetric], fields: tuple[str, ...]) -> Table:
    name = model.__tablename__
    columns = model.__table__.columns
    kinds = tuple(_pg_type(columns[field].type) for field in fields)
    names = ", ".join(("run_id", *fields))
    stage = f"pg_temp.optbench_staged_{name}"
    definition = ", ".join(
        f"{field} {kind}" for field, kind in zip(("run_id", *fields), ("int8", *kinds), strict=True)
    )
    insert = (
        f"INSERT INTO {name} ({names}) SELECT {_selected(fields, kinds)} FROM {stage} "
        "ON CONFLICT DO NOTHING"
    )
    if name == StepMetric.__tablename__:  # the stored rows also feed the rollup, steps_done
        returned = ", ".join(("run_id", "step", *ROLLUP_FIELDS))
        from_staging = (
            f"WITH stored AS ({insert} RETURNING {returned}), "
            f"rolled_up AS ({rollup_insert('stored')}), "
            f"advanced AS ({_ADVANCE}) "
            "SELECT count(*) FROM stored"
        )
    else:
        from_staging = f"WITH stored AS ({insert} RETURNING 1) SELECT count(*) FROM stored"
    return Table(
        name=name,
        fields=fields,
        kinds=kinds,
        required=tuple(f for f in fields if not columns[f].nullable),
        sqlite_insert=(
            f"INSERT INTO {name} ({names}) VALUES ({', '.join('?' * (len(fields) + 1))}) "
            "ON CONFLICT DO NOTHING"
        ),
        pg_copy=f"COPY {name} ({names}) FROM STDIN (FORMAT BINARY)",
        pg_stage=(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({definition}) ON COMMIT DELETE ROWS; "
            f"DELETE FROM {stage}"
        ),
        pg_copy_staged=f"COPY {stage} ({names}) FROM STDIN (FORMAT BINARY)",
        pg_from_staging=from_staging,
    )


# SQLite: one executemany of this (built once, compiled once).
ADVANCE_STEPS_DONE = (
    update(Run)
    .where(Run.id == bindparam("run_id"), Run.steps_done < bindparam("last"))
    .values(steps_done=bindparam("last"))
)

STEPS = _table(StepMetric, STEP_FIELDS)
EPOCHS = _table(EpochMetric, EPOCH_FIELDS)
# New step rows, after their COPY: the rollup blocks and steps_done, one statement.
ROLLUP_AND_ADVANCE = f"WITH advanced AS ({_ADVANCE}) {ROLLUP_UPSERT}"
_EPOCH_COLUMNS = ", ".join(("run_id", *EPOCH_FIELDS))
EPOCHS_FROM_ARRAYS = (  # one array parameter per column, NaN sent as NULL
    f"WITH stored AS (INSERT INTO {EPOCHS.name} ({_EPOCH_COLUMNS}) "
    f"SELECT * FROM unnest({', '.join(['%s'] * (len(EPOCH_FIELDS) + 1))}) "
    "ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM stored"
)

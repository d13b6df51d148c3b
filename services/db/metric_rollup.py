"""``step_rollup`` (PostgreSQL): per run, one row per block of ``ROLLUP_BLOCK`` steps with each
field's min, max (NULLs skipped) and value at the block's last stored step (NULL included).

Two ways in, one merge: a flush's blocks are either aggregated by the database from the rows
an ``INSERT`` stored (``rollup_insert``, fed by its ``RETURNING``: the path for rows that may
repeat stored ones), or computed here with numpy from rows known to be new (``block_arrays``,
one ``reduceat`` per field and statistic; NaN is NULL, and ``fmin``/``fmax`` skip it as
``min``/``max`` skip NULL) and sent as arrays (``ROLLUP_UPSERT``). Both end in the same
``ON CONFLICT (run_id, block) DO UPDATE``: LEAST/GREATEST of the bounds, and the last value
of whichever side has the larger last step. Merging is idempotent, and the rollup stays
equal to an aggregation of ``step_metric`` however flushes cut or repeat blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.db.metric_columns import BinaryArray, Columns
from services.db.models import ROLLUP_BLOCK, ROLLUP_FIELDS, StepRollup

_NAMES = ["run_id", "block", "first_step", "last_step"] + [
    f"{f}_{part}" for f in ROLLUP_FIELDS for part in ("min", "max", "last")
]


def _merge() -> str:
    merged = [
        "first_step = LEAST(step_rollup.first_step, EXCLUDED.first_step)",
        "last_step = GREATEST(step_rollup.last_step, EXCLUDED.last_step)",
    ]
    newer = "EXCLUDED.last_step >= step_rollup.last_step"
    for f in ROLLUP_FIELDS:
        merged += [
            f"{f}_min = LEAST(step_rollup.{f}_min, EXCLUDED.{f}_min)",
            f"{f}_max = GREATEST(step_rollup.{f}_max, EXCLUDED.{f}_max)",
            f"{f}_last = CASE WHEN {newer} THEN EXCLUDED.{f}_last ELSE step_rollup.{f}_last END",
        ]
    return f"ON CONFLICT (run_id, block) DO UPDATE SET {', '.join(merged)}"


MERGE = _merge()


def rollup_insert(source: str) -> str:
    """``INSERT INTO step_rollup`` of the step rows in ``source`` (a table or CTE with
    ``run_id``, ``step`` and ROLLUP_FIELDS), merged into the blocks already stored. Merging
    is idempotent: the same rows again change nothing."""
    selected = ["run_id", f"(step - 1) / {ROLLUP_BLOCK}", "min(step)", "max(step)"]
    for f in ROLLUP_FIELDS:
        selected += [f"min({f})", f"max({f})", f"(array_agg({f} ORDER BY step DESC))[1]"]
    return (
        f"INSERT INTO step_rollup ({', '.join(_NAMES)}) SELECT {', '.join(selected)} "
        f"FROM {source} GROUP BY 1, 2 {MERGE}"
    )


def _pg_type(name: str) -> str:
    if name == "run_id":
        return "int8"
    kind = type(StepRollup.__table__.columns[name].type).__name__
    return {"Integer": "int4", "BigInteger": "int8", "Float": "float8"}[kind]


_KINDS = [_pg_type(name) for name in _NAMES]
# Blocks computed by block_arrays: one array parameter per column, typed by its binary form.
ROLLUP_UPSERT = (
    f"INSERT INTO step_rollup ({', '.join(_NAMES)}) SELECT * "
    f"FROM unnest({', '.join(['%s'] * len(_NAMES))}) {MERGE}"
)


def block_arrays(columns: Columns) -> list[BinaryArray]:
    """The blocks of these step rows, one array per column of ``ROLLUP_UPSERT``. The rows must
    be sorted by (run_id, step), without repeats, with steps from 1."""
    run_id, step = columns.run_id, columns.column("step")
    block = (step - 1) // ROLLUP_BLOCK
    edge = np.empty(len(step), dtype=bool)
    edge[0] = True
    np.not_equal(run_id[1:], run_id[:-1], out=edge[1:])
    edge[1:] |= block[1:] != block[:-1]
    starts = np.flatnonzero(edge)
    ends = np.append(starts[1:], len(step)) - 1
    arrays: list[Any] = [run_id[starts], block[starts], step[starts], step[ends]]
    for field in ROLLUP_FIELDS:
        values = columns.column(field)
        low = np.fmin.reduceat(values, starts)  # NaN only where every value is NaN
        high = np.fmax.reduceat(values, starts)
        arrays += [low, high, values[ends]]
    return BinaryArray.many(_KINDS, arrays)

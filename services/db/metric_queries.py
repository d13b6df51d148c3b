"""Metric reads: columnar series per run, raw (keyset-paginated) or downsampled in SQL.

One query language for ``GET /v1/jobs/{id}/metrics`` and for the reports, on PostgreSQL and
on SQLite alike:

- ``granularity``: ``step`` reads ``step_metric`` (ordered by step), ``epoch`` reads
  ``epoch_metric`` (ordered by epoch).
- ``fields``: the columns wanted (:data:`STEP_FIELDS` / :data:`EPOCH_FIELDS`); the ordering
  key (``step`` or ``epoch``) always comes along. Default: every field.
- ``from_step`` / ``to_step``: an inclusive range on the ``step`` column (for epochs: the
  step at which the epoch ended).
- Raw points, columnar: ``{run_id: {"step": [1, 2, ...], "loss": [...], ...}}``. With
  ``limit`` they come in pages ordered by (run_id, key), resumed after an opaque cursor that
  encodes the last (run_id, key) returned (keyset pagination: the primary key serves every
  page, however deep).
- Downsampled (``max_points=N``): per run, the rows in range are cut into at most N buckets
  of equal key width, ``bucket = (key - first) * N // (last - first + 1)`` (first and last:
  the run's smallest and largest key in range), and each bucket keeps its shape: for each
  field ``f`` the value at the bucket's largest key (``f``), its minimum (``f_min``) and its
  maximum (``f_max``), so a single-step spike or dip survives any N. The key column holds
  the bucket's largest key (where ``f`` was read) and ``<key>_min`` its smallest::

      {"step": [125, 250, ...], "step_min": [1, 126, ...],
       "loss": [...], "loss_min": [...], "loss_max": [...], ...}

  Minimum and maximum skip NULLs; the last value is the one stored at the largest key, NULL
  included (a sparse column such as ``val_loss`` shows in ``val_loss_min``/``_max``).
  The database does the work: two primary-key probes per run for its key range, one
  GROUP BY pass over the rows on the computed bucket (one statement; runs that share a key
  range share its bucket expression), then primary-key probes for the buckets' last values.

  Long runs on PostgreSQL read ``step_rollup`` instead (kept by the write path: per run, one
  row per block of ``ROLLUP_BLOCK`` = 64 steps, ``block = (step - 1) // 64``, with each
  field's min, max and value at the block's last step): for ``granularity=step`` without
  ``from_step``/``to_step``, when every requested field is summarised there
  (:data:`ROLLUP_FIELDS`, every step field) and the run spans at least N blocks
  (:data:`ROLLUP_MIN_BLOCKS_PER_POINT` per point; 64 * N steps). The buckets are then whole
  blocks, ``bucket = (block - first) * N // (last - first + 1)`` (first and last: the run's
  smallest and largest block), so their edges fall on block boundaries (steps 1, 65, 129,
  ...) rather than exactly where the row formula above puts them, and bucket widths differ
  by up to one block (a run of 1.5 * N blocks: buckets of 64 and 128 steps, where the row
  formula gives 96 each). There are still exactly N buckets, and ``step``, ``step_min``,
  ``f``, ``f_min`` and ``f_max`` mean what they mean above (exact over the bucket's rows: a
  spike or dip survives). This reads 1/64 of the rows (a 1,000,000-row job: ~15,600 rollup
  rows). Other runs, SQLite, step ranges and epochs scan the rows as above.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    and_,
    cast,
    func,
    literal_column,
    select,
    text,
    union_all,
)
from sqlalchemy import tuple_ as sql_tuple
from sqlalchemy.orm import Session, aliased

from services.db.models import (
    EPOCH_FIELDS,
    ROLLUP_FIELDS,
    STEP_FIELDS,
    EpochMetric,
    Run,
    StepMetric,
    StepRollup,
)
from services.errors import InvalidSpec

GRANULARITIES = ("step", "epoch")
MAX_POINTS = 10_000  # per run: more than a plot needs (zoom in with from_step/to_step)
MAX_LIMIT = 1_000_000  # rows per page
_FIELDS = {"step": STEP_FIELDS, "epoch": EPOCH_FIELDS}
_MODELS: dict[str, type[StepMetric] | type[EpochMetric]] = {
    "step": StepMetric,
    "epoch": EpochMetric,
}
# PostgreSQL only, for the downsampling statement's transaction: JIT compilation costs more
# than it saves on one aggregation pass, and the bucket hash table must not spill to disk
# (the planner cannot know that there are at most N buckets per run and costs a sort).
# Runs of at least this many step_rollup blocks per requested point read the rollup. At 1,
# every bucket holds one or two blocks; 125,000 steps (1,954 blocks) at max_points=1000 must
# qualify, the case the rollup exists for.
ROLLUP_MIN_BLOCKS_PER_POINT = 1
_POSTGRES_SETTINGS = ("SET LOCAL jit = off", "SET LOCAL work_mem = '64MB'")


def invalid(parameter: str, message: str) -> InvalidSpec:
    """A 422 problem naming the query parameter to change."""
    return InvalidSpec(f"{parameter}: {message}", errors=[{"field": parameter, "message": message}])


@dataclass(frozen=True)
class SeriesQuery:
    """What to read. :meth:`checked` validates it (raising :class:`InvalidSpec`)."""

    granularity: str = "step"
    fields: Sequence[str] | None = None  # None: every field of the granularity
    from_step: int | None = None
    to_step: int | None = None
    max_points: int | None = None  # downsample to at most this many points per run
    limit: int | None = None  # raw points per page (None: all of them)
    cursor: str | None = None  # from a previous page's next_cursor

    @property
    def key(self) -> str:
        return "step" if self.granularity == "step" else "epoch"

    @property
    def value_fields(self) -> tuple[str, ...]:
        """The requested fields other than the key, in the order of the table's fields."""
        wanted = set(_FIELDS[self.granularity] if self.fields is None else self.fields)
        return tuple(f for f in _FIELDS[self.granularity] if f in wanted and f != self.key)

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the series' columns, in order (also the CSV's columns after the run's)."""
        if self.max_points is None:
            return (self.key, *self.value_fields)
        per_field = ((f, f"{f}_min", f"{f}_max") for f in self.value_fields)
        return (self.key, f"{self.key}_min", *(c for cs in per_field for c in cs))

    def checked(self) -> SeriesQuery:
        if self.granularity not in GRANULARITIES:
            raise invalid("granularity", f"must be 'step' or 'epoch', got '{self.granularity}'")
        allowed = _FIELDS[self.granularity]
        if self.fields is not None:
            fields = tuple(dict.fromkeys(f.strip() for f in self.fields if f.strip()))
            unknown = [f for f in fields if f not in allowed]
            if unknown:
                raise invalid(
                    "fields",
                    f"unknown field{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(repr(f) for f in unknown)} for granularity={self.granularity}; "
                    f"allowed: {', '.join(allowed)}",
                )
            query = replace(self, fields=fields or None)
        else:
            query = self
        for name in ("from_step", "to_step"):
            value = getattr(query, name)
            if value is not None and value < 0:
                raise invalid(name, f"must be 0 or more, got {value}")
        if (
            query.from_step is not None
            and query.to_step is not None
            and query.from_step > query.to_step
        ):
            raise invalid("to_step", f"must be at least from_step ({query.from_step})")
        if query.max_points is not None and not 1 <= query.max_points <= MAX_POINTS:
            raise invalid("max_points", f"must be between 1 and {MAX_POINTS}")
        if query.limit is not None and not 1 <= query.limit <= MAX_LIMIT:
            raise invalid("limit", f"must be between 1 and {MAX_LIMIT}")
        if query.max_points is not None and (query.limit is not None or query.cursor):
            parameter = "limit" if query.limit is not None else "cursor"
            raise invalid(parameter, "pages are for raw points; a downsampled series comes whole")
        if query.cursor:
            decode_cursor(query.cursor, query.granularity)
        return query


@dataclass
class SeriesPage:
    """Columns per run (every requested run, empty where it has no points here)."""

    columns: dict[int, dict[str, list[Any]]]
    next_cursor: str | None = None
    query: SeriesQuery = field(default_factory=SeriesQuery)


def encode_cursor(granularity: str, run_id: int, key: int) -> str:
    raw = json.dumps([granularity, run_id, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, granularity: str) -> tuple[int, int]:
    """The (run_id, key) after which a page starts."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        kind, run_id, key = value
        # type() is int, not isinstance: JSON's true and false are bools, which are ints to
        # Python but booleans to the database (comparing a step with one was a 500).
        if not (type(run_id) is int and type(key) is int and kind in GRANULARITIES):
            raise ValueError(cursor)
        if not (0 <= run_id < 2**63 and 0 <= key < 2**31):  # BIGINT run ids, INTEGER steps
            raise ValueError(cursor)  # the database would refuse to compare them (a 500)
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise invalid(
            "cursor", "not a cursor this API returned; pass a page's next_cursor unchanged"
        ) from None
    if kind != granularity:
        raise invalid("cursor", f"belongs to granularity={kind}, not granularity={granularity}")
    return run_id, key


def _in_range(model: Any, query: SeriesQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.from_step is not None:
        conditions.append(model.step >= query.from_step)
    if query.to_step is not None:
        conditions.append(model.step <= query.to_step)
    return conditions


def _raw_statement(run_ids: list[int], query: SeriesQuery) -> Select[Any]:
    model = _MODELS[query.granularity]
    key = getattr(model, query.key)
    statement = (
        select(model.run_id, *(getattr(model, f) for f in query.columns))
        .where(model.run_id.in_(run_ids), *_in_range(model, query))
        .order_by(model.run_id, key)
    )
    if query.cursor:
        after = decode_cursor(query.cursor, query.granularity)
        statement = statement.where(sql_tuple(model.run_id, key) > sql_tuple(*after))
    if query.limit is not None:
        statement = statement.limit(query.limit + 1)  # one more says whether a page follows
    return statement


def _bounds(session: Session, run_ids: list[int], query: SeriesQuery) -> dict[int, tuple[int, int]]:
    """The first and last key of each run in range (two primary-key probes per run)."""
    model = _MODELS[query.granularity]
    key = getattr(model, query.key)
    in_run = [model.run_id == Run.id, *_in_range(model, query)]
    found = session.execute(
        select(
            Run.id,
            select(func.min(key)).where(*in_run).scalar_subquery(),
            select(func.max(key)).where(*in_run).scalar_subquery(),
        ).where(Run.id.in_(run_ids))
    )
    return {run_id: (lo, hi) for run_id, lo, hi in found if lo is not None}


def _bucket_statement(query: SeriesQuery, run_ids: list[int], lo: int, hi: int) -> Select[Any]:
    """Bucket aggregates of runs that share one key range: ``(run_id, key_max, key_min,
    f_min, f_max, ...)``, grouped on the computed bucket in one pass over the rows."""
    assert query.max_points is not None
    model = _MODELS[query.granularity]
    key = getattr(model, query.key)
    # 0 <= bucket < N: integer division of non-negative BIGINTs. The constants are integers
    # from the database and from the checked query, inlined so that the expression is the
    # same text in every run's group and needs no join.
    n, first, width = (
        literal_column(str(int(v)), BigInteger) for v in (query.max_points, lo, hi - lo + 1)
    )
    # Spelled as the operator, as ``//`` would render FLOOR(... / ...) on floats.
    bucket = (cast(key - first, BigInteger) * n).op("/")(width)
    aggregates: list[Any] = [func.max(key).label("key_max"), func.min(key).label("key_min")]
    for name in query.value_fields:
        column = getattr(model, name)
        aggregates += [func.min(column).label(f"{name}_min"), func.max(column).label(f"{name}_max")]
    return (
        select(model.run_id, *aggregates)
        .where(model.run_id.in_(run_ids), *_in_range(model, query))
        .group_by(model.run_id, bucket)
    )


def _downsampled_statement(
    query: SeriesQuery, ranges: dict[tuple[int, int], list[int]], dialect: str
) -> Select[Any]:
    """Rows ``(run_id, *query.columns)`` of the downsampled series, by run and key: the
    bucket aggregates (one GROUP BY pass), each joined to the row at its largest key."""
    model = _MODELS[query.granularity]
    parts = [_bucket_statement(query, ids, lo, hi) for (lo, hi), ids in ranges.items()]
    grouped = parts[0] if len(parts) == 1 else union_all(*parts)
    buckets = grouped.subquery("buckets")
    run_id, key_max, key_min, *spans = buckets.c
    last = aliased(model, name="last")
    at_last = [last.run_id == run_id, getattr(last, query.key) == key_max]
    values = [getattr(last, name) for name in query.value_fields]
    columns: list[Any] = [run_id, key_max, key_min]
    if dialect == "postgresql":
        # LATERAL: one primary-key probe per bucket. A plain join lets the planner hash the
        # whole table instead, as it cannot know how few buckets the GROUP BY returns; LIMIT
        # (one row at most anyway) keeps it from flattening the LATERAL into such a join.
        probe = select(*values).where(*at_last).limit(1).lateral("at_last")
        values = list(probe.c)
        joined = select(buckets).join(probe, literal_column("true"))
    else:  # SQLite joins by nested loops, probing the primary key
        joined = select(buckets).join(last, and_(*at_last))
    for i, value in enumerate(values):
        columns += [value, spans[2 * i], spans[2 * i + 1]]
    return joined.with_only_columns(*columns).order_by(run_id, key_max)


def _rollup_usable(query: SeriesQuery) -> bool:
    """Whether the query's shape lets long runs read step_rollup (PostgreSQL only)."""
    return (
        query.granularity == "step"
        and query.max_points is not None
        and query.from_step is None
        and query.to_step is None
        and set(query.value_fields) <= set(ROLLUP_FIELDS)
    )


def _block_bounds(session: Session, run_ids: list[int]) -> dict[int, tuple[int, int]]:
    """The first and last step_rollup block of each run (two primary-key probes per run)."""
    in_run = StepRollup.run_id == Run.id
    found = session.execute(
        select(
            Run.id,
            select(func.min(StepRollup.block)).where(in_run).scalar_subquery(),
            select(func.max(StepRollup.block)).where(in_run).scalar_subquery(),
        ).where(Run.id.in_(run_ids))
    )
    return {run_id: (lo, hi) for run_id, lo, hi in found if lo is not None}


def _rollup_bucket_statement(
    query: SeriesQuery, run_ids: list[int], lo: int, hi: int
) -> Select[Any]:
    """Bucket aggregates from step_rollup for runs that share one block range: ``(run_id,
    last_block, key_min, f_min, f_max, ...)``, whole blocks per bucket."""
    assert query.max_points is not None
    n, first, width = (
        literal_column(str(int(v)), BigInteger) for v in (query.max_points, lo, hi - lo + 1)
    )
    bucket = (cast(StepRollup.block - first, BigInteger) * n).op("/")(width)
    aggregates: list[Any] = [
        func.max(StepRollup.block).label("last_block"),
        func.min(StepRollup.first_step).label("key_min"),
    ]
    for name in query.value_fields:
        aggregates += [
            func.min(getattr(StepRollup, f"{name}_min")).label(f"{name}_min"),
            func.max(getattr(StepRollup, f"{name}_max")).label(f"{name}_max"),
        ]
    return (
        select(StepRollup.run_id, *aggregates)
        .where(StepRollup.run_id.in_(run_ids))
        .group_by(StepRollup.run_id, bucket)
    )


def _rollup_statement(query: SeriesQuery, ranges: dict[tuple[int, int], list[int]]) -> Select[Any]:
    """Rows ``(run_id, *query.columns)`` of the downsampled series from step_rollup, by run
    and key: the bucket aggregates, each joined to its last block (the one with the largest
    steps) for the key and the last values."""
    parts = [_rollup_bucket_statement(query, ids, lo, hi) for (lo, hi), ids in ranges.items()]
    grouped = parts[0] if len(parts) == 1 else union_all(*parts)
    buckets = grouped.subquery("buckets")
    run_id, last_block, key_min, *spans = buckets.c
    last = aliased(StepRollup, name="last")
    joined = select(buckets).join(last, and_(last.run_id == run_id, last.block == last_block))
    columns: list[Any] = [run_id, last.last_step, key_min]
    for i, name in enumerate(query.value_fields):
        columns += [getattr(last, f"{name}_last"), spans[2 * i], spans[2 * i + 1]]
    return joined.with_only_columns(*columns).order_by(run_id, last.last_step)


def _fetch_binary(session: Session, statement: Select[Any]) -> list[Sequence[Any]]:
    """The statement's rows, in psycopg's binary format where it is the driver: the server
    skips formatting floats as text and the client parsing them (8,000 rows of every field:
    ~60 ms less). The statement's parameters are integers, inlined."""
    connection = session.connection()
    if connection.dialect.driver != "psycopg":  # pragma: no cover - the project's PG driver
        return list(connection.execute(statement).all())
    sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
    driver = connection.connection.driver_connection  # psycopg.Connection, same transaction
    with driver.cursor(binary=True) as cursor:  # type: ignore[union-attr]
        cursor.execute(sql)
        return list(cursor.fetchall())


def _by_range(bounds: dict[int, tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    ranges: dict[tuple[int, int], list[int]] = {}
    for run_id, run_bounds in bounds.items():
        ranges.setdefault(run_bounds, []).append(run_id)
    return ranges


def _downsampled(
    session: Session, run_ids: list[int], query: SeriesQuery
) -> Sequence[Sequence[Any]]:
    """Rows ``(run_id, *query.columns)`` of the downsampled series, by run and key."""
    assert query.max_points is not None
    dialect = session.get_bind().dialect.name
    found: list[Sequence[Any]] = []  # from step_rollup, then from the rows
    if dialect == "postgresql":
        for setting in _POSTGRES_SETTINGS:
            session.execute(text(setting))
        if _rollup_usable(query):
            blocks = {
                run_id: (lo, hi)
                for run_id, (lo, hi) in _block_bounds(session, run_ids).items()
                if hi - lo + 1 >= ROLLUP_MIN_BLOCKS_PER_POINT * query.max_points
            }
            if blocks:
                found += _fetch_binary(session, _rollup_statement(query, _by_range(blocks)))
                run_ids = [run_id for run_id in run_ids if run_id not in blocks]
    ranges = _by_range(_bounds(session, run_ids, query)) if run_ids else {}
    if ranges:
        rolled_up = bool(found)
        found += session.execute(_downsampled_statement(query, ranges, dialect)).all()
        if rolled_up:  # two parts, each by run and key: a stable sort by run merges them
            found.sort(key=lambda row: row[0])
    return found


def rows(
    session: Session, run_ids: Iterable[int], query: SeriesQuery, *, batch: int = 10_000
) -> Iterator[Sequence[Any]]:
    """``(run_id, *query.columns)`` rows by run and key, for exports. Raw points stream
    through a server-side cursor (PostgreSQL) in batches, never all held in memory."""
    query = query.checked()
    ids = list(run_ids)
    if not ids:
        return
    if query.max_points is not None:
        yield from _downsampled(session, ids, query)
        return
    result = session.execute(_raw_statement(ids, query), execution_options={"yield_per": batch})
    for partition in result.partitions():
        yield from partition


def fetch(session: Session, run_ids: Iterable[int], query: SeriesQuery) -> SeriesPage:
    """Columnar series per run for the query; ``next_cursor`` when raw points remain."""
    query = query.checked()
    ids = list(run_ids)
    names = query.columns
    columns: dict[int, dict[str, list[Any]]] = {rid: {c: [] for c in names} for rid in ids}
    if not ids:
        return SeriesPage(columns, None, query)
    found: Sequence[Sequence[Any]]
    if query.max_points is not None:
        found = _downsampled(session, ids, query)
    else:
        found = session.execute(_raw_statement(ids, query)).all()
    next_cursor = None
    if query.limit is not None and len(found) > query.limit:
        found = found[: query.limit]
        run_id, key = found[-1][0], found[-1][1]
        next_cursor = encode_cursor(query.granularity, run_id, key)
    for run_id, group in groupby(found, key=lambda r: r[0]):
        transposed = zip(*group, strict=True)
        next(transposed)  # the run ids
        columns[run_id] = {
            name: list(values) for name, values in zip(names, transposed, strict=True)
        }
    return SeriesPage(columns, next_cursor, query)


def series(
    session: Session,
    run_ids: Iterable[int],
    granularity: str = "step",
    **options: Any,
) -> dict[int, dict[str, list[Any]]]:
    """Columnar series per run: ``{run_id: {"step": [...], "loss": [...], ...}}``.

    ``options`` are :class:`SeriesQuery`'s other fields (fields, from_step, to_step,
    max_points); without them, every raw point of every field.
    """
    return fetch(session, run_ids, SeriesQuery(granularity=granularity, **options)).columns


def count_steps(session: Session, run_ids: Iterable[int]) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(StepMetric).where(StepMetric.run_id.in_(list(run_ids)))
        )
        or 0
    )

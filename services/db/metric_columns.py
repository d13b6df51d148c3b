"""Metric rows of several runs as columns (numpy arrays), and the PostgreSQL binary forms
numpy encodes from them: the ``COPY`` stream, and array parameters.

The write path (services/db/metric_writes.py) works on one ``Columns`` per flush: a ``run_id``
column and one column per field, ``float64`` for floats (NaN is NULL: SQLite has no NaN
either) and ``int64`` for integers, so that nothing after it loops over rows in Python. They
come from the engine's arrays (``of_arrays``: concatenated, run ids by ``np.repeat``) or from
rows (``from_rows``: one ``map`` of an item or attribute getter per field, in C).

``copy_payload`` encodes them in PostgreSQL's binary ``COPY`` format without a Python loop
over the rows: one numpy record per row (a field count, then per column a length word and
the big-endian value). A column that is NULL in every row has no value bytes in the record
at all (a length of -1 means NULL); where only some rows of a column are NULL, their value
bytes are dropped by one boolean mask over the whole buffer. ``BinaryArray`` is the same
encoding as a one-dimensional array parameter (the rollup's blocks, the epoch rows, run ids),
which psycopg sends as it is (``send_binary_arrays``) instead of adapting every element.

What the binary encoding cannot represent exactly (an integer column with a NULL or a
non-integer, or a value outside its PostgreSQL type) makes ``from_rows`` return None and
``fits`` False, and the caller writes those rows with psycopg's per-row ``write_row``
instead (which then raises the database's own error where there is one).
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.adapt import Dumper, PyFormat
from psycopg.pq import Format

# PostgreSQL's binary COPY: signature, flags, header extension length; and the trailer.
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
TRAILER = b"\xff\xff"
_BIG_ENDIAN = {"int8": ">i8", "int4": ">i4", "float8": ">f8"}
_INT_RANGE = {"int8": (-(2**63), 2**63 - 1), "int4": (-(2**31), 2**31 - 1)}

# Rows: mappings (a missing key is NULL), tuples of the values in the fields' order, or
# objects with the fields as attributes.
Rows = Sequence[Mapping[str, Any]] | Sequence[tuple[Any, ...]] | Sequence[Any]


@dataclass(frozen=True)
class Columns:
    """Rows of several runs: ``run_id``, then ``values[i]`` for ``fields[i]``."""

    fields: tuple[str, ...]
    kinds: tuple[str, ...]  # PostgreSQL type of each field: int4, int8 or float8
    run_id: npt.NDArray[np.int64]
    values: tuple[npt.NDArray[Any], ...]

    def __len__(self) -> int:
        return len(self.run_id)

    def column(self, field: str) -> npt.NDArray[Any]:
        return self.values[self.fields.index(field)]

    def take(self, index: npt.NDArray[np.intp]) -> Columns:
        """These rows in another order (or a subset)."""
        values = tuple(column[index] for column in self.values)
        return Columns(self.fields, self.kinds, self.run_id[index], values)

    def last_steps(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Run ids, and each one's largest step."""
        ids, inverse = np.unique(self.run_id, return_inverse=True)
        last = np.full(len(ids), np.iinfo(np.int64).min)
        np.maximum.at(last, inverse, self.column("step"))
        return ids, last

    def insertable(self, required: Collection[str]) -> Columns | None:
        """These rows sorted by (run_id, step), if they can go straight into their table: no
        key twice, steps from 1, the ``required`` columns without NULL. None otherwise."""
        for field, kind, column in zip(self.fields, self.kinds, self.values, strict=True):
            if field in required and kind == "float8" and np.isnan(column).any():
                return None
        step = self.column("step")
        if len(step) and step.min() < 1:
            return None
        if _strictly_sorted(self.run_id, step):
            return self
        ordered = self.take(np.lexsort((step, self.run_id)))
        return ordered if _strictly_sorted(ordered.run_id, ordered.column("step")) else None

    def rows(self) -> list[tuple[Any, ...]]:
        """(run_id, *values) per row, as Python numbers; NaN as None (for executemany)."""
        columns: list[list[Any]] = [self.run_id.tolist()]
        for kind, column in zip(self.kinds, self.values, strict=True):
            values = column.tolist()
            if kind == "float8" and np.isnan(column).any():
                values = [None if v != v else v for v in values]
            columns.append(values)
        return list(zip(*columns, strict=True))

    def fits(self) -> bool:
        """Whether the binary encoding holds every value exactly: integer columns of integers
        within their PostgreSQL type (numpy would wrap the others), float columns of floats."""
        for kind, column in zip(self.kinds, self.values, strict=True):
            if kind == "float8":
                if column.dtype != np.float64:
                    return False
                continue
            if column.dtype.kind not in "iu":
                return False
            low, high = _INT_RANGE[kind]
            if len(column) and (column.min() < low or column.max() > high):
                return False
        return True

    @classmethod
    def of_arrays(
        cls, fields: tuple[str, ...], kinds: tuple[str, ...], batch: Sequence[tuple[int, Any]]
    ) -> Columns:
        """Columns of ``(run_id, arrays)`` pairs, where ``arrays`` has each field as a
        one-dimensional numpy array attribute (the engine's ``StepColumns``), in their order:
        each field's arrays concatenated (a copy: the caller's arrays may be reused), no work
        per row. A float array in an integer field raises TypeError."""
        counts = [len(getattr(arrays, fields[0])) for _, arrays in batch]
        run_id = np.repeat(np.array([run_id for run_id, _ in batch], dtype=np.int64), counts)
        dtypes = [np.float64 if kind == "float8" else np.int64 for kind in kinds]
        values = tuple(
            np.concatenate(
                [getattr(arrays, field) for _, arrays in batch] or [np.empty(0, dtype)],
                dtype=dtype,
                casting="same_kind",
            )
            for field, dtype in zip(fields, dtypes, strict=True)
        )
        if any(len(column) != len(run_id) for column in values):
            raise ValueError("the arrays of one run differ in length")
        return cls(fields, kinds, run_id, values)

    @classmethod
    def join(cls, parts: Sequence[Columns]) -> Columns:
        """The rows of several ``Columns`` of the same fields, in their order."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        values = tuple(
            np.concatenate([part.values[i] for part in parts]) for i in range(len(first.fields))
        )
        run_id = np.concatenate([part.run_id for part in parts])
        return cls(first.fields, first.kinds, run_id, values)

    @classmethod
    def from_rows(
        cls,
        fields: tuple[str, ...],
        kinds: tuple[str, ...],
        batch: Sequence[tuple[int, Rows]],
    ) -> Columns | None:
        """Columns of ``(run_id, rows)`` pairs (``Rows``), in their order. None: not
        representable."""
        batch = [(run_id, rows) for run_id, rows in batch if rows]
        counts = [len(rows) for _, rows in batch]
        run_id = np.repeat(np.array([run_id for run_id, _ in batch], dtype=np.int64), counts)
        every = [row for _, rows in batch for row in rows]
        values = []
        for index, kind in enumerate(kinds):
            column = _column(_read(every, fields, index), kind)
            if column is None:
                return None
            values.append(column)
        return cls(fields, kinds, run_id, tuple(values))


def _strictly_sorted(run_id: npt.NDArray[np.int64], step: npt.NDArray[np.int64]) -> bool:
    run_up = np.diff(run_id)
    return bool(np.all((run_up > 0) | ((run_up == 0) & (np.diff(step) > 0))))


def _read(rows: Sequence[Any], fields: tuple[str, ...], index: int) -> list[Any]:
    """One field of every row (one ``map`` in C)."""
    if rows and isinstance(rows[0], tuple):
        return list(map(operator.itemgetter(index), rows))
    if rows and isinstance(rows[0], Mapping):
        try:
            return list(map(operator.itemgetter(fields[index]), rows))
        except KeyError:
            return [row.get(fields[index]) for row in rows]
    return list(map(operator.attrgetter(fields[index]), rows))


def row_values(row: Any, fields: tuple[str, ...]) -> tuple[Any, ...]:
    """One row's values in the fields' order (``Rows``)."""
    if isinstance(row, tuple):
        return row
    if isinstance(row, Mapping):
        return tuple(row.get(field) for field in fields)
    return tuple(getattr(row, field, None) for field in fields)


def _column(values: list[Any], kind: str) -> npt.NDArray[Any] | None:
    if kind == "float8":
        if values.count(None) == len(values):  # often: a column this job never fills
            return np.full(len(values), np.nan)
        try:
            return np.array(values, dtype=np.float64)  # None becomes NaN
        except (TypeError, ValueError):
            return None
    try:
        column = np.array(values)
    except (TypeError, ValueError, OverflowError):
        return None
    if column.dtype.kind not in "iu":  # a NULL, a float, a bool: let the database judge
        return None
    low, high = _INT_RANGE[kind]
    if len(column) and (column.min() < low or column.max() > high):
        return None
    return column.astype(np.int64, copy=False)


def _encode(kinds: Sequence[str], data: Sequence[npt.NDArray[Any]], count: bool) -> bytes:
    """Per row (optionally a 16-bit field count, then) per column a 32-bit length and the
    big-endian value, or a length of -1 and no value for NULL (NaN in a float column): the
    tuple format of binary COPY, and the element format of a binary array."""
    all_null = tuple(
        kind == "float8" and bool(np.isnan(column).all())
        for kind, column in zip(kinds, data, strict=True)
    )
    record = _record(tuple(kinds), all_null, count)
    n = len(data[0]) if data else 0
    out = np.empty(n, dtype=record)
    if count:
        out["count"] = len(kinds)
    some_null = []
    for i, (kind, column) in enumerate(zip(kinds, data, strict=True)):
        if all_null[i]:
            out[f"n{i}"] = -1
            continue
        out[f"n{i}"] = record[f"v{i}"].itemsize
        out[f"v{i}"] = column
        if kind == "float8":
            null = np.isnan(column)
            if null.any():
                out[f"n{i}"][null] = -1
                some_null.append((record.fields[f"v{i}"][1], null))  # type: ignore[index]
    if not some_null:
        return out.tobytes()
    # Rows with NULLs among values: drop those values' 8 bytes with one mask over the rows.
    raw = out.view(np.uint8).reshape(n, record.itemsize)
    keep = np.ones(raw.shape, dtype=bool)
    for offset, null in some_null:
        keep[null, offset : offset + 8] = False
    return raw[keep].tobytes()


@functools.lru_cache(maxsize=256)
def _record(kinds: tuple[str, ...], all_null: tuple[bool, ...], count: bool) -> np.dtype[Any]:
    layout = [("count", ">i2")] if count else []
    for i, (kind, null) in enumerate(zip(kinds, all_null, strict=True)):
        layout.append((f"n{i}", ">i4"))
        if not null:  # a column of NULLs only has no value bytes at all
            layout.append((f"v{i}", _BIG_ENDIAN[kind]))
    return np.dtype(layout)


def copy_payload(columns: Columns) -> bytes:
    """The whole binary ``COPY ... FROM STDIN (FORMAT BINARY)`` stream for these rows, in
    their order: ``run_id``, then the fields."""
    data = (columns.run_id, *columns.values)
    return SIGNATURE + _encode(("int8", *columns.kinds), data, count=True) + TRAILER


@dataclass(frozen=True)
class BinaryArray:
    """A one-dimensional PostgreSQL array in the binary format, built by numpy: a query
    parameter that psycopg sends as it is (``ArrayDumper``), with no work per element. NaN in
    a float8 array is NULL."""

    kind: str
    data: bytes

    @classmethod
    def of(cls, kind: str, values: npt.NDArray[Any]) -> BinaryArray:
        nulls = kind == "float8" and bool(np.isnan(values).any())
        header = np.array(
            [1, nulls, _ELEMENT_OID[kind], len(values), 1]
            if len(values)
            else [0, 0, _ELEMENT_OID[kind]],
            dtype=">i4",
        ).tobytes()
        return cls(kind, header + _encode((kind,), (values,), count=False))

    @classmethod
    def many(cls, kinds: Sequence[str], arrays: Sequence[npt.NDArray[Any]]) -> list[BinaryArray]:
        """``of`` of each (kind, array) pair, the same bytes, but the arrays of one kind and
        length encoded together: one numpy pass per group instead of per array (the
        rollup's 34 short arrays per flush: 1.5 ms one by one, docs/performance.md)."""
        groups: dict[tuple[str, int], list[int]] = {}
        for i, (kind, values) in enumerate(zip(kinds, arrays, strict=True)):
            groups.setdefault((kind, len(values)), []).append(i)
        encoded: dict[int, BinaryArray] = {}
        for (kind, n), at in groups.items():
            if n == 0 or len(at) == 1:
                encoded.update((i, cls.of(kind, arrays[i])) for i in at)
                continue
            size = 4 if kind == "int4" else 8
            stack = np.array([arrays[i] for i in at], dtype=_BIG_ENDIAN[kind])  # (arrays, n)
            cells = np.empty((len(at), n, 4 + size), dtype=np.uint8)  # length word, value
            cells[:, :, :4] = _LENGTH_WORDS[size]
            cells[:, :, 4:] = stack.view(np.uint8).reshape(len(at), n, size)
            headers = np.empty((len(at), 5), dtype=">i4")
            headers[:] = (1, 0, _ELEMENT_OID[kind], n, 1)
            nulls = np.isnan(stack) if kind == "float8" else None
            lengths = np.full(len(at), n * (4 + size))
            if nulls is not None and nulls.any():  # NULL: a length of -1, no value bytes
                cells[nulls, :4] = 0xFF
                keep = np.ones(cells.shape, dtype=bool)
                keep[nulls, 4:] = False
                payload = cells[keep].tobytes()
                headers[:, 1] = nulls.any(axis=1)
                lengths -= size * nulls.sum(axis=1)
            else:
                payload = cells.tobytes()
            ends = np.cumsum(lengths).tolist()
            starts = [0, *ends[:-1]]
            for j, i in enumerate(at):
                body = payload[starts[j] : ends[j]]
                encoded[i] = cls(kind, headers[j].tobytes() + body)
        return [encoded[i] for i in range(len(arrays))]


_ELEMENT_OID = {"int8": 20, "int4": 23, "float8": 701}
_LENGTH_WORDS = {size: np.frombuffer(np.array(size, ">i4").tobytes(), np.uint8) for size in (4, 8)}


class _ArrayDumper(Dumper):
    """Sends a BinaryArray as it is: binary, typed by its element type."""

    format = Format.BINARY

    def get_key(self, obj: BinaryArray, format: PyFormat) -> type:
        return _ARRAY_DUMPERS[obj.kind]  # a key per element type

    def upgrade(self, obj: BinaryArray, format: PyFormat) -> Dumper:
        return _ARRAY_DUMPERS[obj.kind](BinaryArray)

    def dump(self, obj: BinaryArray) -> bytes:
        return obj.data


_ARRAY_DUMPERS = {
    kind: type(f"_{kind.capitalize()}ArrayDumper", (_ArrayDumper,), {"oid": oid})
    for kind, oid in (("int8", 1016), ("int4", 1007), ("float8", 1022))
}
_SENDING: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


def send_binary_arrays(connection: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The connection, set up (once) to send BinaryArray parameters."""
    if connection not in _SENDING:
        connection.adapters.register_dumper(BinaryArray, _ArrayDumper)
        _SENDING.add(connection)
    return connection

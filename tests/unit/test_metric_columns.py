"""Rows as numpy columns, and the binary COPY stream and array parameters numpy encodes from
them: what PostgreSQL reads back is what was given (NaN and None as NULL)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import pytest

from services.db import metric_writes
from services.db.metric_columns import BinaryArray, Columns, copy_payload

FIELDS = ("step", "big", "a", "b", "c")
KINDS = ("int4", "int8", "float8", "float8", "float8")
NAN, INF = math.nan, math.inf


def rows(values: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(FIELDS, row, strict=True)) for row in values]


def test_columns_of_mappings_and_objects_are_the_same() -> None:
    @dataclass
    class Row:
        step: int
        big: int
        a: float | None
        b: float | None
        c: float | None

    given = [(1, 2**40, 0.5, None, None), (2, -3, None, INF, None), (3, 0, 1, -INF, None)]
    from_mappings = Columns.from_rows(FIELDS, KINDS, [(7, rows(given[:2])), (8, rows(given[2:]))])
    objects = [Row(*row) for row in given]
    from_objects = Columns.from_rows(FIELDS, KINDS, [(7, objects[:2]), (8, objects[2:])])
    assert from_mappings is not None and from_objects is not None
    for columns in (from_mappings, from_objects):
        assert columns.run_id.tolist() == [7, 7, 8]
        assert columns.column("step").dtype == np.int64
        assert columns.column("big").tolist() == [2**40, -3, 0]
        assert np.array_equal(columns.column("a"), [0.5, NAN, 1.0], equal_nan=True)
        assert columns.rows()[0] == (7, 1, 2**40, 0.5, None, None)


def test_a_missing_key_is_null() -> None:
    columns = Columns.from_rows(FIELDS, KINDS, [(1, [{"step": 1, "big": 2, "a": 0.5}])])
    assert columns is not None
    assert columns.rows() == [(1, 1, 2, 0.5, None, None)]


@pytest.mark.parametrize(
    "value",
    [None, 1.5, 2**31, "3"],
    ids=["null", "float", "beyond int4", "text"],
)
def test_what_numpy_cannot_hold_exactly_is_left_to_the_database(value: Any) -> None:
    given = rows([(1, 1, 0.5, 0.5, 0.5), (value, 1, 0.5, 0.5, 0.5)])
    assert Columns.from_rows(FIELDS, KINDS, [(1, given)]) is None


def copied_back(payload: bytes) -> list[tuple[Any, ...]]:
    from tests.conftest import POSTGRES_ADMIN_URL

    url = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE copied (run_id int8, step int4, big int8, "
            "a float8, b float8, c float8)"
        )
        with cursor.copy(
            "COPY copied (run_id, step, big, a, b, c) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.write(payload)
        return cursor.execute("SELECT * FROM copied").fetchall()


def test_the_copy_stream_reads_back_as_given(postgres_url: str) -> None:
    given = [
        (1, 2**62, 0.25, NAN, None),  # c: NULL in every row (no value bytes at all)
        (2, -(2**62), None, 1e300, None),  # a: NULL in some rows
        (3, 0, -INF, INF, None),
        (2**31 - 1, 7, 1.0, -0.0, None),
    ]
    columns = Columns.from_rows(FIELDS, KINDS, [(5, rows(given[:3])), (6, rows(given[3:]))])
    assert columns is not None
    expected = [(5, *row) for row in given[:3]] + [(6, *given[3])]
    expected = [tuple(None if v != v else v for v in row) for row in expected]  # NaN: NULL
    assert copied_back(copy_payload(columns)) == expected
    no_nulls = Columns.from_rows(FIELDS, KINDS, [(5, rows([(1, 2, 0.5, 0.25, 0.125)]))])
    assert no_nulls is not None
    assert copied_back(copy_payload(no_nulls)) == [(5, 1, 2, 0.5, 0.25, 0.125)]
    empty = Columns.from_rows(FIELDS, KINDS, [(5, rows([(1, 2, 0.5, 0.25, 0.125)]))])
    assert empty is not None
    assert copied_back(copy_payload(empty.take(np.array([], dtype=np.intp)))) == []


@pytest.mark.parametrize(
    ("kind", "values", "expected"),
    [
        ("float8", [0.5, NAN, -INF, 1e-300], [0.5, None, -INF, 1e-300]),
        ("float8", [NAN, NAN], [None, None]),
        ("float8", [], []),
        ("int4", [1, -(2**31), 2**31 - 1], [1, -(2**31), 2**31 - 1]),
        ("int8", [2**63 - 1, -5], [2**63 - 1, -5]),
    ],
)
def test_binary_arrays_read_back_as_given(
    postgres_db: str, kind: str, values: list[Any], expected: list[Any]
) -> None:
    from services.db.session import get_engine

    parameter = BinaryArray.of(kind, np.array(values, dtype=float if kind == "float8" else int))
    with get_engine().connect() as connection:
        driver = metric_writes._driver(connection)
        got = driver.execute(f"SELECT %s::{kind}[]", (parameter,)).fetchone()
    assert got == (expected,)


def test_binary_arrays_encoded_together_are_the_bytes_of_each_alone() -> None:
    """``BinaryArray.many`` (the rollup's blocks) groups arrays by kind and length: the same
    bytes as ``of`` per array, NULLs (NaN) in some, all or none of a group's elements."""
    rng = np.random.default_rng(3)
    floats = [rng.normal(size=5) for _ in range(4)]
    floats[1][[0, 3]] = NAN
    floats[2][:] = NAN
    kinds = ["int8", "float8", "int4", "float8", "float8", "int4", "float8", "float8", "int8"]
    arrays = [
        np.array([7, 2**40, -1, 0, 9]),
        floats[0],
        np.array([1, -(2**31), 2**31 - 1, 0, 5]),
        floats[1],
        floats[2],
        np.array([3, 4]),  # another length: a group of its own
        floats[3],
        np.array([], dtype=float),
        np.array([2**63 - 1, 1, 2, 3, 4]),
    ]
    expected = [BinaryArray.of(kind, array) for kind, array in zip(kinds, arrays, strict=True)]
    assert BinaryArray.many(kinds, arrays) == expected


def test_columns_of_arrays_concatenate_runs_and_check_types() -> None:
    @dataclass
    class Arrays:
        step: Any
        big: Any
        a: Any
        b: Any
        c: Any

    def of(steps: list[int]) -> Arrays:
        n = len(steps)
        ints = np.array(steps, dtype=np.int64)
        return Arrays(ints, ints * 2**40, ints / 2, np.full(n, NAN), np.full(n, INF))

    columns = Columns.of_arrays(FIELDS, KINDS, [(7, of([1, 2])), (8, of([1])), (9, of([]))])
    assert columns.run_id.tolist() == [7, 7, 8]
    assert columns.column("big").tolist() == [2**40, 2**41, 2**40]
    assert columns.rows()[1] == (7, 2, 2**41, 1.0, None, INF)
    assert columns.fits()
    joined = Columns.join([columns, Columns.of_arrays(FIELDS, KINDS, [(9, of([5]))])])
    assert joined.run_id.tolist() == [7, 7, 8, 9] and joined.column("step").tolist()[-1] == 5
    assert len(Columns.of_arrays(FIELDS, KINDS, [])) == 0

    beyond = of([1, 2**31])  # int4 would wrap it
    assert not Columns.of_arrays(FIELDS, KINDS, [(1, beyond)]).fits()
    floats = of([1])
    floats.step = np.array([1.5])
    with pytest.raises(TypeError):
        Columns.of_arrays(FIELDS, KINDS, [(1, floats)])
    ragged = of([1, 2])
    ragged.a = np.array([0.5])
    with pytest.raises(ValueError):
        Columns.of_arrays(FIELDS, KINDS, [(1, ragged)])

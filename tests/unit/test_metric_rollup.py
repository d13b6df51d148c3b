"""step_rollup (PostgreSQL): the write path keeps it equal to an aggregation of the stored
step rows, however flushes overlap or repeat, and downsampled reads of long runs use it,
with block-aligned buckets, while short runs, step ranges and SQLite scan the rows."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, select, text

from services.db import metric_queries, metric_writes, store
from services.db.metric_queries import SeriesQuery
from services.db.models import ROLLUP_BLOCK, ROLLUP_FIELDS, STEP_FIELDS, StepMetric, StepRollup
from services.db.session import get_engine, unit_of_work
from services.spec import LECTURE_SPEC, JobSpec

SPIKE, DIP = 1.0e6, -1.0e6


def make_runs(count: int) -> list[int]:
    spec = copy.deepcopy(LECTURE_SPEC)
    spec["optimizers"] = [{"name": "sgd", "lr": 0.05, "label": f"r{i}"} for i in range(count)]
    spec["seeds"] = [0]
    with unit_of_work() as session:
        job = store.create_job(session, JobSpec.model_validate(spec))
        return [run.id for run in job.runs]


def row(step: int, shift: float = 0.0) -> dict[str, Any]:
    """A step row: sparse accuracy and val_loss (NULL most steps), NULL landscape point."""
    return {
        "step": step,
        "epoch": 1 + (step - 1) // 100,
        "loss": 1.0 + 1.0 / step + ((step * 7919) % 13) / 100 + shift,
        "accuracy": None if step % 5 == 0 else step / 100_000,
        "lr": 0.05 * (1 + step % 3),
        "grad_norm": ((step * 104729) % 101) / 10,
        "train_seconds": 0.001 * step,
        "x": None,
        "y": None,
        "val_loss": 0.5 + 1.0 / step if step % 250 == 0 else None,
        "val_accuracy": None,
    }


def write(run_id: int, rows: Sequence[dict[str, Any]]) -> int:
    with unit_of_work() as session:
        return metric_writes.write_steps(session, run_id, rows)


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every statement sent: through SQLAlchemy, and on PostgreSQL also psycopg's own (the
    rollup's rows are fetched on a binary psycopg cursor)."""
    seen: list[str] = []
    listener = lambda conn, cursor, sql, *args: seen.append(sql)  # noqa: E731
    original = psycopg.Cursor.execute

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(query, str) and "step_rollup" in query:
            seen.append(query)
        return original(self, query, *args, **kwargs)

    event.listen(get_engine(), "before_cursor_execute", listener)
    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        psycopg.Cursor.execute = original  # type: ignore[method-assign]
        event.remove(get_engine(), "before_cursor_execute", listener)


def fetch(run_ids: list[int], **options: Any) -> tuple[dict[int, dict[str, list[Any]]], str]:
    """The columns, and which paths served them: 'rollup', 'rows' or 'rollup+rows'."""
    with statements() as seen, unit_of_work() as session:
        columns = metric_queries.fetch(session, run_ids, SeriesQuery(**options)).columns
    grouped = [s for s in seen if "GROUP BY" in s]
    paths = [("rollup" if "FROM step_rollup" in s else "rows") for s in grouped if "step_" in s]
    return columns, "+".join(paths)


def stored_rows(run_id: int) -> list[dict[str, Any]]:
    with unit_of_work() as session:
        found = session.execute(
            select(*(getattr(StepMetric, f) for f in STEP_FIELDS))
            .where(StepMetric.run_id == run_id)
            .order_by(StepMetric.step)
        ).all()
    return [dict(zip(STEP_FIELDS, r, strict=True)) for r in found]


def summarise(
    rows: Sequence[dict[str, Any]], fields: Sequence[str], suffixes: tuple[str, str, str]
) -> dict[str, Any]:
    """Key range, then per field: value at the largest step, min and max skipping NULLs."""
    last, low, high = suffixes
    out: dict[str, Any] = {"first_step": rows[0]["step"], "last_step": rows[-1]["step"]}
    for f in fields:
        present = [r[f] for r in rows if r[f] is not None]
        out[f + last] = rows[-1][f]
        out[f + low] = min(present) if present else None
        out[f + high] = max(present) if present else None
    return out


def expected_blocks(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    blocks: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        blocks.setdefault((r["step"] - 1) // ROLLUP_BLOCK, []).append(r)
    return {b: summarise(rs, ROLLUP_FIELDS, ("_last", "_min", "_max")) for b, rs in blocks.items()}


def stored_blocks(run_id: int) -> dict[int, dict[str, Any]]:
    names = ["first_step", "last_step"]
    names += [f"{f}_{part}" for f in ROLLUP_FIELDS for part in ("last", "min", "max")]
    with unit_of_work() as session:
        found = session.execute(
            select(StepRollup.block, *(getattr(StepRollup, n) for n in names))
            .where(StepRollup.run_id == run_id)
            .order_by(StepRollup.block)
        ).all()
    return {b: dict(zip(names, values, strict=True)) for b, *values in found}


def expected_series(
    rows: Sequence[dict[str, Any]], fields: Sequence[str], n: int, *, aligned: bool = True
) -> dict[str, list[Any]]:
    """The documented bucketing, in Python, over the raw rows: block-aligned (the rollup's)
    or the row formula (the scan's)."""
    width = ROLLUP_BLOCK if aligned else 1
    key = [(r["step"] - 1) // width for r in rows]
    lo, hi = key[0], key[-1]
    buckets: dict[int, list[dict[str, Any]]] = {}
    for k, r in zip(key, rows, strict=True):
        buckets.setdefault((k - lo) * n // (hi - lo + 1), []).append(r)
    columns: dict[str, list[Any]] = {"step": [], "step_min": []}
    for f in fields:
        columns.update({f: [], f"{f}_min": [], f"{f}_max": []})
    for _, rs in sorted(buckets.items()):
        summary = summarise(rs, fields, ("", "_min", "_max"))
        columns["step"].append(summary.pop("last_step"))
        columns["step_min"].append(summary.pop("first_step"))
        for name, value in summary.items():
            columns[name].append(value)
    return columns


def test_long_runs_read_the_rollup_and_get_block_aligned_buckets(postgres_db: str) -> None:
    long_run, exact_run, short_run = make_runs(3)
    rows = [row(s) for s in range(1, 20_001)]  # 313 blocks
    rows[4320]["loss"], rows[15_000]["loss"] = SPIKE, DIP
    for first in range(0, len(rows), 3_000):  # several flushes, blocks cut across them
        write(long_run, rows[first : first + 3_000])
    exact_rows = [row(s, 1.0) for s in range(1, 3_201)]  # 50 blocks: one per point
    write(exact_run, exact_rows)
    short_rows = [row(s, 2.0) for s in range(1, 3_137)]  # 49 blocks: one too few
    write(short_run, short_rows)

    columns, paths = fetch([long_run, exact_run], max_points=50, fields=["loss"])
    assert paths == "rollup"
    series = columns[long_run]
    assert series == expected_series(rows, ["loss"], 50)
    assert len(series["step"]) == 50 and series["step"][-1] == 20_000
    assert series["step_min"][1] % ROLLUP_BLOCK == 1  # bucket edges on block boundaries
    spiked = series["loss_max"].index(SPIKE)
    assert series["step_min"][spiked] <= 4321 <= series["step"][spiked]
    dipped = series["loss_min"].index(DIP)
    assert series["step_min"][dipped] <= 15_001 <= series["step"][dipped]
    assert SPIKE not in series["loss"] and DIP not in series["loss"]
    assert columns[exact_run] == expected_series(exact_rows, ["loss"], 50)

    # every field (the default): NULL last values, sparse and all-NULL columns; one short
    # run among long ones scans its rows, the others still read the rollup
    everything, paths = fetch([long_run, short_run, exact_run], max_points=50)
    assert paths == "rollup+rows"
    assert list(everything) == [long_run, short_run, exact_run]
    fields = [f for f in STEP_FIELDS if f != "step"]
    assert everything[long_run] == expected_series(rows, fields, 50)
    assert everything[exact_run] == expected_series(exact_rows, fields, 50)
    short = everything[short_run]
    assert len(short["step"]) == 50 and short["step"][-1] == 3_136
    assert short == expected_series(short_rows, fields, 50, aligned=False)
    assert short != expected_series(short_rows, fields, 50)


def test_step_ranges_small_budgets_and_epochs_scan_the_rows(postgres_db: str) -> None:
    (run_id,) = make_runs(1)
    rows = [row(s) for s in range(1, 10_001)]  # 157 blocks
    write(run_id, rows)
    _, paths = fetch([run_id], max_points=50, fields=["loss"])
    assert paths == "rollup"
    for options in (
        {"max_points": 50, "from_step": 1},
        {"max_points": 50, "to_step": 10_000},
        {"max_points": 158},  # 157 blocks: one too few
    ):
        columns, paths = fetch([run_id], fields=["loss"], **options)
        assert paths == "rows", options
        n = options["max_points"]
        assert columns[run_id] == expected_series(rows, ["loss"], n, aligned=False)
    _, paths = fetch([run_id], max_points=5, granularity="epoch")
    assert paths == ""  # no epochs stored: nothing to group


def test_overlapping_and_repeated_flushes_leave_the_rollup_exact(postgres_db: str) -> None:
    (run_id,) = make_runs(1)
    flushes = [
        (33, 64),
        (1, 40),  # overlaps the block's later rows: its last value must stay step 64's
        (300, 700),
        (129, 150),  # a gap before it, filled below
        (100, 320),
        (65, 99),
        (690, 1_000),
        (300, 700),  # a redelivered flush
    ]
    for first, last in flushes:
        write(run_id, [row(s) for s in range(first, last + 1)])
    # a rewrite with other values changes no stored row, so neither does it change the rollup
    assert write(run_id, [row(s, 100.0) for s in range(500, 600)]) == 0
    stored = stored_rows(run_id)
    assert [r["step"] for r in stored] == list(range(1, 1_001))
    assert stored_blocks(run_id) == expected_blocks(stored)
    # the statement that fills the rollup from whole tables (migration, benchmark) agrees
    with unit_of_work() as session:
        session.execute(text("DELETE FROM step_rollup"))
        session.execute(text(metric_writes.rollup_insert("step_metric")))
    assert stored_blocks(run_id) == expected_blocks(stored)


def test_deleting_a_job_deletes_its_rollup(postgres_db: str) -> None:
    (run_id,) = make_runs(1)
    write(run_id, [row(s) for s in range(1, 200)])
    assert len(stored_blocks(run_id)) == 4
    with unit_of_work() as session:
        session.execute(text("DELETE FROM job"))
    assert stored_blocks(run_id) == {}


@pytest.mark.parametrize("max_points", [1, 7])
def test_sqlite_never_uses_the_rollup(embedded_home: object, max_points: int) -> None:
    (run_id,) = make_runs(1)
    rows = [row(s) for s in range(1, 2_001)]
    write(run_id, rows)
    columns, paths = fetch([run_id], max_points=max_points, fields=["loss"])
    assert paths == "rows"
    assert columns[run_id]["step"][-1] == 2_000
    assert stored_blocks(run_id) == {}


def test_blocks_computed_from_new_rows_equal_the_databases_aggregation(
    postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New rows go straight in with their blocks computed in Python; repeats go through the
    staging path, aggregated by the database: both leave the same rollup, on batches of
    several runs (a run twice in one batch, as the sink's writer gathers flushes), with
    NULLs, NaN and infinities."""
    import random

    runs = make_runs(3)
    rng = random.Random(7)
    paths: list[str] = []
    copy_new, via_staging = metric_writes._copy_new_steps, metric_writes._insert_via_staging

    def copy_new_steps(*args: Any) -> bool:
        taken = copy_new(*args)
        paths.append("copy" if taken else "copy refused")
        return taken

    def insert_via_staging(*args: Any) -> int:
        paths.append("staging")
        return via_staging(*args)

    monkeypatch.setattr(metric_writes, "_copy_new_steps", copy_new_steps)
    monkeypatch.setattr(metric_writes, "_insert_via_staging", insert_via_staging)

    def odd(step: int, run: int) -> dict[str, Any]:
        r = row(step, shift=run)
        if step % 7 == 0:
            r["grad_norm"] = float("inf") if step % 2 else float("-inf")
        if step % 11 == 0:
            r["val_accuracy"] = float("nan")  # stored as NULL
        if step % 13 == 0:
            r["x"], r["y"] = step / 3, -step / 5
        return r

    cut = {run: 0 for run in runs}
    while any(done < 700 for done in cut.values()):
        batch = []
        for _ in range(rng.randint(1, 4)):
            run = rng.choice(runs)
            size = rng.randint(1, 90)
            first = cut[run] + 1
            if rng.random() < 0.2:  # some steps again (a redelivered flush)
                first = max(1, first - rng.randint(1, 40))
            shift = runs.index(run)
            batch.append((run, [odd(s, shift) for s in range(first, first + size)]))
            cut[run] = max(cut[run], first + size - 1)
        with unit_of_work() as session:
            metric_writes.write_step_batch(session, batch)
    assert {"copy", "copy refused", "staging"} <= set(paths)  # every path was taken
    for run in runs:
        stored = stored_rows(run)
        assert [r["step"] for r in stored] == list(range(1, cut[run] + 1))
        assert stored_blocks(run) == expected_blocks(stored)
    before = {run: stored_blocks(run) for run in runs}
    with unit_of_work() as session:
        session.execute(text("DELETE FROM step_rollup"))
        session.execute(text(metric_writes.rollup_insert("step_metric")))
    assert {run: stored_blocks(run) for run in runs} == before

"""Metric write throughput: step rows into PostgreSQL through the SQL sink, next to a plain
COPY of the same rows measured in the same run.

    .venv/bin/python -m benchmarks.bench_metric_writes [--rows 1000000] [--runs 10] [--flush 100]
        [--repeats 3]

Builds a fresh PostgreSQL database (dropped at the end), migrates it, creates one job of
``--runs`` runs and generates ``--rows`` steps once, in memory (``--rows / --runs`` steps per
run, a mid-epoch evaluation every 1,000 steps): as the engine's columns (``StepColumns``, cut
into flushes before any clock starts) for the sink, and as step records for the plain COPY.
Then, with the table emptied and a CHECKPOINT before each, it times:

1. ``COPY step_metric FROM STDIN`` (binary, psycopg's ``write_row`` per record, one
   transaction) of the rows, in the sink's order;
2. a plain COPY per ``--flush`` rows, each its own transaction, with no duplicate check: the
   floor for any design that commits every flush (``--no-copy-per-flush`` skips it);
3. the SQL sink's write path (``workers.sinks.sql.SqlSink(background=False).on_steps``: no
   writer thread, so each call is written and committed before it returns) fed
   ``StepColumns`` of ``--flush`` rows of one run, as the engine feeds it, runs interleaved,
   each flush its own transaction (benchmarks/bench_storage_overhead.py measures the sink as
   training uses it);
4. the sink again with flushes of ``--large-flush`` rows (0 skips it);
5. the sink as training uses it (``SqlSink()``: its writer thread gathers the ``--flush``-row
   flushes into large transactions; ``--no-writer`` skips it);
6. optionally (``--async-commit``) the sink at ``--flush`` with the database's
   ``synchronous_commit = off``, which shows what the per-flush WAL flush costs.

Every case runs ``--repeats`` times, the cases in turn forwards and backwards (ABBA), each
compared with the raw COPY of its own repeat, so that a drift in the machine's load cancels
out of the ratios. The goal of issue 17 is the sink at 1,000-row flushes (``--flush 1000``),
each flush its own transaction, at >= 0.5x that COPY.

It prints rows/s for each (median of the repeats), the ratio to the same repeat's COPY (median
and range), the per-flush latency, and the machine. The server is PostgreSQL at
``--admin-url`` (default: ``$OPTBENCH_TEST_POSTGRES`` or the local trust-auth server as user
postgres); its user must be allowed to create databases (and to CHECKPOINT: a superuser, else
that step is skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import operator
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from sqlalchemy.engine import URL

from benchmarks.support import ADMIN_URL, cpu_description, scratch_database, use_database
from services.db.models import ROLLUP_BLOCK, STEP_FIELDS

COPY_TYPES = ["int8", "int4", "int4"] + ["float8"] * (len(STEP_FIELDS) - 2)
# Issue 17: the sink at 1,000-row flushes, each its own transaction, at least half the rate
# of a raw COPY of the same rows.
GOAL, GOAL_FLUSH = 0.5, 1000


@dataclass
class Result:
    label: str
    rows: int
    seconds: float
    flush_ms: list[float]

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def machine(url: URL) -> str:
    with psycopg.connect(dsn(url)) as connection:
        settings = {
            name: connection.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        }
    return (
        f"{cpu_description()}, psycopg {psycopg.__version__} "
        f"({psycopg.pq.__impl__}), PostgreSQL {settings.pop('server_version')} "
        f"({', '.join(f'{k}={v}' for k, v in settings.items())})"
    )


def create_job(runs: int) -> list[int]:
    from services.db import store
    from services.db.session import unit_of_work
    from services.spec import LECTURE_SPEC, JobSpec

    spec = copy.deepcopy(LECTURE_SPEC)
    spec["name"] = "metric write benchmark"
    spec["optimizers"] = [{"name": "sgd", "lr": 0.05, "label": f"sgd-{i}"} for i in range(runs)]
    spec["seeds"] = [0]
    with unit_of_work() as session:
        job = store.create_job(session, JobSpec.model_validate(spec))
        return [run.id for run in job.runs]


def generate(steps: int, seed: int) -> Any:
    """One run's steps as the engine hands them to sinks (``StepColumns``)."""
    from workers.engine import StepColumns

    rng = np.random.default_rng(seed)
    step = np.arange(1, steps + 1, dtype=np.int64)
    loss = 2.3 * np.exp(-step / (steps / 5)) + 0.05 * rng.random(steps)
    accuracy = 1.0 - loss / 2.5
    grad_norm = rng.random(steps)
    evaluated = step % 1000 == 0  # a mid-epoch evaluation every 1,000 steps
    return StepColumns(
        step=step,
        epoch=1 + (step - 1) // 1000,
        loss=loss,
        accuracy=accuracy,
        lr=np.full(steps, 0.05),
        grad_norm=grad_norm,
        train_seconds=step * 1e-3,
        x=np.full(steps, np.nan),
        y=np.full(steps, np.nan),
        val_loss=np.where(evaluated, loss, np.nan),
        val_accuracy=np.where(evaluated, accuracy, np.nan),
        samples=np.full(steps, 64, dtype=np.int64),
    )


def sliced(columns: Any, start: int, stop: int) -> Any:
    """Steps start..stop-1 (0-based) of a run's columns: views, no copy."""
    return dataclasses.replace(
        columns,
        **{f.name: getattr(columns, f.name)[start:stop] for f in dataclasses.fields(columns)},
    )


def flushes(steps: dict[int, Any], size: int) -> list[tuple[int, Any]]:
    """(run id, its steps: records or columns) per flush, runs interleaved the way fused
    training flushes them."""
    longest = max(len(r) for r in steps.values())
    cut = (
        (lambda rows, start: rows[start : start + size])
        if isinstance(next(iter(steps.values())), list)
        else (lambda rows, start: sliced(rows, start, start + size))
    )
    return [
        (run_id, cut(rows, start))
        for start in range(0, longest, size)
        for run_id, rows in steps.items()
        if len(rows) > start
    ]


def reset(url: URL, run_ids: list[int]) -> None:
    """Empty step tables, runs back at step 0, dirty pages written: each case starts equal."""
    with psycopg.connect(dsn(url), autocommit=True) as connection:
        connection.execute("TRUNCATE step_metric, step_rollup")
        connection.execute("UPDATE run SET steps_done = 0 WHERE id = ANY(%s)", (run_ids,))
        connection.execute("VACUUM ANALYZE run")
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            connection.execute("CHECKPOINT")


def check(url: URL, rows: int, run_ids: list[int], steps: int, sink: bool) -> None:
    with psycopg.connect(dsn(url)) as connection:
        stored = connection.execute("SELECT count(*) FROM step_metric").fetchone()
        blocks = connection.execute("SELECT count(*) FROM step_rollup").fetchone()
        done = connection.execute(
            "SELECT min(steps_done), max(steps_done) FROM run WHERE id = ANY(%s)", (run_ids,)
        ).fetchone()
    assert stored == (rows,), f"{stored} rows stored, {rows} expected"
    if sink:  # the sink keeps step_rollup too (COPY straight into step_metric does not)
        assert done == (steps, steps), f"steps_done {done}, {steps} expected"
        expected = len(run_ids) * -(-steps // ROLLUP_BLOCK)
        assert blocks == (expected,), f"{blocks} rollup rows, {expected} expected"


class Progress:
    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.next = label, total, total // 10
        self.started = time.perf_counter()

    def __call__(self, done: int) -> None:
        if done >= self.next or done == self.total:
            seconds = time.perf_counter() - self.started
            print(
                f"    {self.label}: {done:>9,} / {self.total:,} rows, {seconds:6.1f} s, "
                f"{done / seconds:9,.0f} rows/s",
                flush=True,
            )
            self.next += self.total // 10


def copy_case(url: URL, plan: list[tuple[int, list[Any]]], label: str) -> Result:
    values = operator.attrgetter(*STEP_FIELDS)
    total = sum(len(rows) for _, rows in plan)
    progress = Progress(f"{label} (rows streamed; the server catches up at the end)", total)
    columns = ", ".join(("run_id", *STEP_FIELDS))
    done = 0
    started = time.perf_counter()
    statement = f"COPY step_metric ({columns}) FROM STDIN (FORMAT BINARY)"
    with (
        psycopg.connect(dsn(url)) as connection,
        connection.cursor() as cursor,
        cursor.copy(statement) as copy_in,
    ):
        copy_in.set_types(COPY_TYPES)
        for run_id, rows in plan:
            for record in rows:
                copy_in.write_row((run_id, *values(record)))
            done += len(rows)
            if done >= progress.next:
                progress(done)
    return Result(label, total, time.perf_counter() - started, [])


def copy_per_flush_case(url: URL, plan: list[tuple[int, list[Any]]], label: str) -> Result:
    """The floor for any design that commits every flush: a plain COPY per flush, each in its
    own transaction, with no staging, no duplicate check and no steps_done."""
    values = operator.attrgetter(*STEP_FIELDS)
    total = sum(len(rows) for _, rows in plan)
    progress = Progress(label, total)
    columns = ", ".join(("run_id", *STEP_FIELDS))
    statement = f"COPY step_metric ({columns}) FROM STDIN (FORMAT BINARY)"
    flush_ms: list[float] = []
    done = 0
    started = time.perf_counter()
    with psycopg.connect(dsn(url)) as connection:
        for run_id, rows in plan:
            flush_started = time.perf_counter()
            with connection.cursor() as cursor, cursor.copy(statement) as copy_in:
                copy_in.set_types(COPY_TYPES)
                for record in rows:
                    copy_in.write_row((run_id, *values(record)))
            connection.commit()
            flush_ms.append((time.perf_counter() - flush_started) * 1000)
            done += len(rows)
            if done >= progress.next:
                progress(done)
    return Result(label, total, time.perf_counter() - started, flush_ms)


def sink_case(plan: list[tuple[int, list[Any]]], label: str) -> Result:
    from workers.engine import OptimizerConfig, RunConfig
    from workers.sinks.sql import SqlSink

    sink = SqlSink(background=False)  # each flush written and committed in the call
    configs = {
        run_id: RunConfig(run_id, OptimizerConfig(f"sgd-{run_id}", "sgd", "SGD", {}), 0)
        for run_id, _ in plan
    }
    total = sum(len(rows) for _, rows in plan)
    progress = Progress(label, total)
    flush_ms: list[float] = []
    done = 0
    started = time.perf_counter()
    for run_id, rows in plan:
        flush_started = time.perf_counter()
        sink.on_steps(configs[run_id], rows)
        flush_ms.append((time.perf_counter() - flush_started) * 1000)
        done += len(rows)
        if done >= progress.next:
            progress(done)
    return Result(label, total, time.perf_counter() - started, flush_ms)


def writer_case(plan: list[tuple[int, list[Any]]], label: str) -> Result:
    """The sink as training uses it: its writer thread gathers the flushes into large
    transactions; the time runs until the last row is committed (``flush()``)."""
    from workers.engine import OptimizerConfig, RunConfig
    from workers.sinks.sql import SqlSink

    configs = {
        run_id: RunConfig(run_id, OptimizerConfig(f"sgd-{run_id}", "sgd", "SGD", {}), 0)
        for run_id, _ in plan
    }
    total = sum(len(rows) for _, rows in plan)
    started = time.perf_counter()
    with SqlSink() as sink:
        for run_id, rows in plan:
            sink.on_steps(configs[run_id], rows)
        sink.flush()
    seconds = time.perf_counter() - started
    print(f"    {label}: {sink.stats.transactions:,} transactions", flush=True)
    return Result(label, total, seconds, [])


def set_synchronous_commit(url: URL, name: str, value: str) -> None:
    """For new connections to the database: the engine is rebuilt to get them."""
    with psycopg.connect(dsn(url), autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = {value}')
    use_database(url.render_as_string(hide_password=False))


def run(args: argparse.Namespace) -> None:
    from services.db.migrate import upgrade

    began = time.perf_counter()
    with scratch_database(args.admin_url) as url:
        name = str(url.database)
        print(f"machine: {machine(url)}", flush=True)
        upgrade(url.render_as_string(hide_password=False))
        run_ids = create_job(args.runs)
        steps = args.rows // args.runs
        started = time.perf_counter()
        columns = {run_id: generate(steps, seed) for seed, run_id in enumerate(run_ids)}
        records = {run_id: c.records() for run_id, c in columns.items()}  # for the plain COPY
        rows = steps * len(run_ids)
        print(
            f"database {name}: {len(run_ids)} runs x {steps:,} steps = {rows:,} step rows "
            f"generated in memory in {time.perf_counter() - started:.1f} s",
            flush=True,
        )

        def copy_rows() -> Result:
            return copy_case(url, flushes(records, args.flush), "COPY")

        def copy_per_flush() -> Result:
            label = f"COPY per flush={args.flush}"
            return copy_per_flush_case(url, flushes(records, args.flush), label)

        def sink_at(size: int) -> Callable[[], Result]:
            return lambda: sink_case(flushes(columns, size), f"sink, flush={size}")

        def sink_async_commit() -> Result:
            set_synchronous_commit(url, name, "off")
            try:
                return sink_case(flushes(columns, args.flush), "sink, synchronous_commit=off")
            finally:
                set_synchronous_commit(url, name, "DEFAULT")

        # (label, case, whether it goes through the sink and so advances steps_done)
        cases: list[tuple[str, Callable[[], Result], bool]] = [("COPY", copy_rows, False)]
        if args.copy_per_flush:
            label = f"COPY per flush={args.flush}, no ON CONFLICT"
            cases.append((label, copy_per_flush, False))
        for size in [args.flush] + ([args.large_flush] if args.large_flush else []):
            cases.append((f"sink, flush={size}", sink_at(size), True))
        if args.writer:
            label = f"sink's writer thread, flush={args.flush}"
            cases.append((label, lambda: writer_case(flushes(columns, args.flush), label), True))
        if args.async_commit:
            label = f"sink, flush={args.flush}, synchronous_commit=off"
            cases.append((label, sink_async_commit, True))

        # Every repeat runs every case, in turn forwards and backwards (ABBA), and each case is
        # compared with the COPY of its own repeat: a drift in the machine's load cancels out.
        results: dict[str, list[Result]] = {label: [] for label, _, _ in cases}
        ratios: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        for repeat in range(args.repeats):
            order = cases if repeat % 2 == 0 else cases[::-1]
            done: dict[str, Result] = {}
            for label, case, through_sink in order:
                print(f"\n{label} (repeat {repeat + 1}):", flush=True)
                reset(url, run_ids)
                result = case()
                result.label = label
                check(url, rows, run_ids, steps, through_sink)
                done[label] = result
                print(f"    {result.rows:,} rows in {result.seconds:.1f} s", flush=True)
            for label, result in done.items():
                results[label].append(result)
                ratios[label].append(result.rate / done["COPY"].rate)

        print(
            f"\n{'case':<46} {'rows/s':>10} {'x COPY':>7} {'range':>11}  per flush (ms)"
            f"\n(medians of {args.repeats} repeats; x COPY: against the raw COPY of the same "
            "repeat)"
        )
        for label, measured in results.items():
            latency = ""
            flush_ms = sorted(ms for result in measured for ms in result.flush_ms)
            if flush_ms:
                latency = (
                    f"median {statistics.median(flush_ms):.2f}, "
                    f"p99 {flush_ms[int(len(flush_ms) * 0.99)]:.2f} ({len(flush_ms):,} flushes)"
                )
            rate = statistics.median(result.rate for result in measured)
            ratio = ratios[label]
            print(
                f"{label:<46} {rate:>10,.0f} {statistics.median(ratio):>7.2f} "
                f"{min(ratio):>5.2f}-{max(ratio):<5.2f}  {latency}"
            )
        goal = f"sink, flush={GOAL_FLUSH}"
        if goal in ratios:
            median = statistics.median(ratios[goal])
            verdict = "met" if median >= GOAL else "NOT met"
            print(
                f"goal: {goal} (each flush its own transaction) >= {GOAL}x raw COPY: "
                f"{verdict} ({median:.2f}x)"
            )
        print(f"machine at the end: load average {os.getloadavg()[0]:.1f}")
    print(f"whole benchmark {time.perf_counter() - began:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="step rows in all")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--flush", type=int, default=100, help="rows per flush (OPTBENCH_FLUSH_EVERY_STEPS)"
    )
    parser.add_argument("--large-flush", type=int, default=1000, help="0: skip that case")
    parser.add_argument(
        "--no-copy-per-flush",
        dest="copy_per_flush",
        action="store_false",
        help="skip the plain COPY per --flush rows, each committed (the per-commit floor)",
    )
    parser.add_argument(
        "--async-commit", action="store_true", help="also the sink with synchronous_commit=off"
    )
    parser.add_argument(
        "--no-writer",
        dest="writer",
        action="store_false",
        help="skip the sink through its writer thread (flushes gathered into transactions)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="every case this often, in ABBA order"
    )
    parser.add_argument("--admin-url", default=ADMIN_URL)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

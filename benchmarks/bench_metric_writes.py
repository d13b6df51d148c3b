"""Metric write throughput: step rows into PostgreSQL through the SQL sink, next to a plain
COPY of the same rows measured in the same run.

    .venv/bin/python -m benchmarks.bench_metric_writes [--rows 1000000] [--runs 10] [--flush 100]

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
5. optionally (``--async-commit``) the sink at ``--flush`` with the database's
   ``synchronous_commit = off``, which shows what the per-flush WAL flush costs;
6. the COPY again, so that a drift in the machine's load shows.

It prints rows/s for each, the ratio sink / COPY (against the faster COPY), the per-flush
latency, and the machine. The server is PostgreSQL at ``--admin-url`` (default:
``$OPTBENCH_TEST_POSTGRES`` or the local trust-auth server as user postgres); its user must be
allowed to create databases (and to CHECKPOINT: a superuser, else that step is skipped).
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
        if args.async_commit:
            label = f"sink, flush={args.flush}, synchronous_commit=off"
            cases.append((label, sink_async_commit, True))
        cases.append(("COPY again", copy_rows, False))

        results: list[Result] = []
        for label, case, through_sink in cases:
            print(f"\n{label}:", flush=True)
            reset(url, run_ids)
            result = case()
            result.label = label
            check(url, rows, run_ids, steps, through_sink)
            results.append(result)
            print(f"    {result.rows:,} rows in {result.seconds:.1f} s", flush=True)

        copy_rate = max(r.rate for r in results if r.label.startswith("COPY"))
        print(f"\n{'case':<42} {'rows/s':>10} {'seconds':>8} {'x COPY':>7}  per flush (ms)")
        for result in results:
            latency = ""
            if result.flush_ms:
                ms = sorted(result.flush_ms)
                latency = (
                    f"median {statistics.median(ms):.2f}, p99 {ms[int(len(ms) * 0.99)]:.2f} "
                    f"({len(ms):,} flushes)"
                )
            print(
                f"{result.label:<42} {result.rate:>10,.0f} {result.seconds:>8.1f} "
                f"{result.rate / copy_rate:>7.2f}  {latency}"
            )
        print(f"(x COPY: against the faster COPY, {copy_rate:,.0f} rows/s)")
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
    parser.add_argument("--admin-url", default=ADMIN_URL)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

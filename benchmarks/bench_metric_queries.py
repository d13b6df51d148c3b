"""Latency of GET /v1/jobs/{id}/metrics on a job with a million step rows.

    .venv/bin/python -m benchmarks.bench_metric_queries [--runs 8] [--steps 125000]

Builds a fresh PostgreSQL database (dropped at the end), migrates it, loads one job of
``runs x steps`` step rows with COPY (and fills step_rollup from them, as the write path
would have, timed apart), then times, through the service function the route
calls (median of ``--repeat``) and once through the HTTP app (FastAPI's TestClient):
downsampled to ``--points`` points per run (every field, and loss + accuracy only) next to
fetching every raw point. It also checks that a one-step spike planted in every run shows
in the downsampled maximum, and prints the machine it ran on.

The server is PostgreSQL at ``--admin-url`` (default: ``$OPTBENCH_TEST_POSTGRES`` or the
local trust-auth server as user postgres); its user must be allowed to create databases.
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from benchmarks.support import ADMIN_URL, cpu_description, scratch_database
from services.db import metric_queries, metric_writes
from services.db.metric_queries import SeriesQuery
from services.db.models import ROLLUP_BLOCK

COPY_COLUMNS = ("run_id", "step", "epoch", "loss", "accuracy", "lr", "grad_norm", "train_seconds")
SPIKE = 1.0e6


def create_job(runs: int) -> tuple[uuid.UUID, list[int]]:
    from services.db import store
    from services.db.session import unit_of_work
    from services.spec import LECTURE_SPEC, JobSpec

    spec = copy.deepcopy(LECTURE_SPEC)
    spec["name"] = "metric query benchmark"
    spec["optimizers"] = [{"name": "sgd", "lr": 0.05, "label": f"sgd-{i}"} for i in range(runs)]
    with unit_of_work() as session:
        job = store.create_job(session, JobSpec.model_validate(spec))
        return job.id, [run.id for run in job.runs]


def load_steps(url: URL, run_ids: list[int], steps: int) -> tuple[float, int]:
    """COPY ``steps`` rows per run (a noisy decreasing loss, one spike each); seconds, rows."""
    rng = np.random.default_rng(0)
    step = np.arange(1, steps + 1)
    epoch = 1 + (step - 1) // 1000
    started = time.perf_counter()
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        columns = ", ".join(COPY_COLUMNS)
        with cursor.copy(f"COPY step_metric ({columns}) FROM STDIN") as copy_in:
            for run_id in run_ids:
                loss = 2.3 * np.exp(-step / (steps / 5)) + 0.05 * rng.random(steps)
                loss[steps // 3] = SPIKE  # one step, as a diverging batch would give
                accuracy = 1.0 - loss / 2.5
                grad_norm = rng.random(steps)
                for row in zip(
                    [run_id] * steps,
                    step.tolist(),
                    epoch.tolist(),
                    loss.tolist(),
                    accuracy.tolist(),
                    [0.05] * steps,
                    grad_norm.tolist(),
                    (step * 1e-3).tolist(),
                    strict=True,
                ):
                    copy_in.write_row(row)
        cursor.execute(
            "UPDATE run SET steps_done = %s, total_steps = %s, status = 'succeeded' "
            "WHERE id = ANY(%s)",
            (steps, steps, run_ids),
        )
    loaded = time.perf_counter() - started
    # What autovacuum would do soon after a job ends: planner statistics, visibility map.
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE step_metric")
    return loaded, len(run_ids) * steps


def fill_rollup(url: URL) -> tuple[float, int]:
    """Fill step_rollup from the COPYed rows (the write path would have kept it), as one
    ``INSERT ... SELECT ... GROUP BY`` over step_metric; seconds, rollup rows."""
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    started = time.perf_counter()
    with psycopg.connect(dsn) as connection:
        connection.execute("SET LOCAL work_mem = '64MB'")
        written = connection.execute(metric_writes.rollup_insert("step_metric")).rowcount
    seconds = time.perf_counter() - started
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE step_rollup")
    return seconds, written


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median milliseconds over ``repeat`` calls after one warm-up call; the last result."""
    result = call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def machine(url: URL) -> str:
    engine = create_engine(url)
    with engine.connect() as connection:
        version = str(connection.scalar(text("SHOW server_version")))
        workers = str(connection.scalar(text("SHOW max_parallel_workers_per_gather")))
    engine.dispose()
    return f"{cpu_description()}, PostgreSQL {version} (max_parallel_workers_per_gather={workers})"


def explain(
    url: URL, run_ids: list[int], query: SeriesQuery, steps: int, rollup: bool
) -> list[str]:
    """EXPLAIN ANALYZE of a downsampling statement, as the service runs it: from
    step_rollup (long runs) or over the rows (what the rollup replaces)."""
    engine = create_engine(url)
    if rollup:
        blocks = (0, (steps - 1) // ROLLUP_BLOCK)
        statement = metric_queries._rollup_statement(query.checked(), {blocks: run_ids})
    else:
        statement = metric_queries._downsampled_statement(
            query.checked(), {(1, steps): run_ids}, "postgresql"
        )
    sql = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.begin() as connection:
        for setting in metric_queries._POSTGRES_SETTINGS:
            connection.execute(text(setting))
        plan = [str(row[0]) for row in connection.execute(text(f"EXPLAIN ANALYZE {sql}"))]
    engine.dispose()
    return plan


def run(args: argparse.Namespace) -> None:
    from fastapi.testclient import TestClient

    from services import jobs
    from services.api.app import create_app
    from services.db.migrate import upgrade

    with scratch_database(args.admin_url) as url:
        url_text, name = url.render_as_string(hide_password=False), url.database
        print(f"machine: {machine(url)}")
        started = time.perf_counter()
        upgrade(url_text)
        print(f"migrated {name} in {time.perf_counter() - started:.1f} s")
        job_id, run_ids = create_job(args.runs)
        seconds, rows = load_steps(url, run_ids, args.steps)
        print(
            f"loaded {rows:,} step rows ({args.runs} runs x {args.steps:,} steps) with COPY "
            f"in {seconds:.1f} s (+ VACUUM ANALYZE)"
        )
        seconds, blocks = fill_rollup(url)
        print(
            f"filled step_rollup ({blocks:,} blocks of {ROLLUP_BLOCK} steps) from them with one "
            f"INSERT ... SELECT ... GROUP BY in {seconds:.1f} s (+ VACUUM ANALYZE)"
        )

        cases: list[tuple[str, SeriesQuery, int]] = [
            (
                f"downsampled, {args.points} points/run, every field",
                SeriesQuery(max_points=args.points),
                args.repeat,
            ),
            (
                f"downsampled, {args.points} points/run, loss+accuracy",
                SeriesQuery(max_points=args.points, fields=("loss", "accuracy")),
                args.repeat,
            ),
            (
                "same, over the rows (from_step=1: no rollup)",
                SeriesQuery(max_points=args.points, fields=("loss", "accuracy"), from_step=1),
                3,
            ),
            ("raw, every point, loss+accuracy", SeriesQuery(fields=("loss", "accuracy")), 3),
            ("raw, every point, every field", SeriesQuery(), 3),
        ]
        print("\nservice (services.jobs.metrics, as the route calls it), median of repeats:")
        for label, query, repeat in cases:
            ms, result = timed(functools.partial(jobs.metrics, job_id, query), repeat)
            points = sum(len(c[query.key]) for c in result.page.columns.values())
            extra = ""
            if query.max_points is not None:
                longest = max(len(c["step"]) for c in result.page.columns.values())
                spikes = sum(SPIKE in c["loss_max"] for c in result.page.columns.values())
                extra = f"; <= {longest} points/run; spike kept in {spikes}/{len(run_ids)} runs"
            print(f"  {label:<46} {ms:9.1f} ms  ({points:,} points, x{repeat}{extra})")

        print("\nHTTP (TestClient, GET /v1/jobs/{id}/metrics), once:")
        http_cases = [
            (f"?max_points={args.points}", {"max_points": args.points}),
            (
                f"?max_points={args.points}&fields=loss,accuracy",
                {"max_points": args.points, "fields": "loss,accuracy"},
            ),
            ("?fields=loss,accuracy (raw)", {"fields": "loss,accuracy"}),
            ("(raw, every field)", {}),
            ("?format=csv (raw, every field)", {"format": "csv"}),
        ]
        with TestClient(create_app()) as client:
            client.get(f"/v1/jobs/{job_id}/metrics", params={"max_points": 10})  # warm up
            for label, params in http_cases:
                started = time.perf_counter()
                response = client.get(f"/v1/jobs/{job_id}/metrics", params=params)
                ms = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, response.text[:500]
                size = len(response.content) / 1e6
                print(f"  {label:<46} {ms:9.1f} ms  ({size:.1f} MB)")

        if args.explain:
            query = SeriesQuery(max_points=args.points, fields=("loss", "accuracy"))
            for rollup, source in ((True, "step_rollup"), (False, "the rows of step_metric")):
                print(f"\nEXPLAIN ANALYZE of the downsampling statement over {source}:")
                for line in explain(url, run_ids, query, args.steps, rollup):
                    print(f"  {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=125_000, help="step rows per run")
    parser.add_argument("--points", type=int, default=1000, help="max_points per run")
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per case")
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--explain", action="store_true", help="print the query plan")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

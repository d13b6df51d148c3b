"""Engine hooks → SQL: every flush is one transaction with one multi-row statement."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

from sqlalchemy.orm import Session

from services.db import metric_writes, store
from services.db.models import STEP_FIELDS
from services.db.session import unit_of_work
from services.telemetry import (
    METRIC_ROWS_DEDUPLICATED,
    METRIC_ROWS_WRITTEN,
    METRIC_WRITE_SECONDS,
)
from workers.engine import EpochRecord, Hooks, RunConfig, RunResult, StepRecord


class SqlSink(Hooks):
    """Every flush is its own transaction with one statement per table."""

    def on_run_start(self, run: RunConfig, total_steps: int) -> None:
        with unit_of_work() as session:
            store.start_run(session, run.key)

    def on_steps(self, run: RunConfig, steps: Sequence[StepRecord]) -> None:
        rows = [{field: getattr(record, field) for field in STEP_FIELDS} for record in steps]
        _timed_write(
            "step", rows, lambda session: metric_writes.write_steps(session, run.key, rows)
        )

    def on_epochs(self, run: RunConfig, epochs: Sequence[EpochRecord]) -> None:
        rows = [asdict(epoch) for epoch in epochs]
        _timed_write(
            "epoch", rows, lambda session: metric_writes.write_epochs(session, run.key, rows)
        )

    def on_run_end(self, run: RunConfig, result: RunResult) -> None:
        with unit_of_work() as session:
            store.finish_run(session, run.key, result)


def _timed_write(granularity: str, rows: Sequence[object], write: Callable[[Session], int]) -> None:
    started = time.perf_counter()
    with unit_of_work() as session:
        written = write(session)
    METRIC_WRITE_SECONDS.labels(granularity).observe(time.perf_counter() - started)
    METRIC_ROWS_WRITTEN.labels(granularity).inc(written)
    METRIC_ROWS_DEDUPLICATED.labels(granularity).inc(len(rows) - written)

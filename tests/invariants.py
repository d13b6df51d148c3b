"""Invariants every stored job keeps, checked after every test that stores one.

The fixtures that give a test a database (``embedded_home``, ``postgres_db``, the
integration clusters) call ``assert_stored_metrics_valid`` before they drop what the test
stored, so a wrong number on any execution path fails the test that produced it: every
accuracy in [0, 1], every R² at most 1 (it has no lower bound), on every step, every epoch
and every run's test score. The in-process engine tests call ``assert_records_valid`` on
what a ``MemorySink`` kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

# (table, column) of every stored score: accuracy, or R² for regression.
SCORE_COLUMNS = (
    ("step_metric", "accuracy"),
    ("step_metric", "val_accuracy"),
    ("epoch_metric", "train_accuracy"),
    ("epoch_metric", "val_accuracy"),
)


def _regression_jobs(connection: Any) -> set[str]:
    """Ids of the jobs whose scores are R² (a regression data set, generated or uploaded)."""
    regression: set[str] = set()
    uploads = {
        str(row.id).replace("-", ""): row.task
        for row in connection.execute(text("SELECT id, task FROM dataset")).mappings()
    }
    for row in connection.execute(text("SELECT id, spec FROM job")).mappings():
        spec = row.spec if isinstance(row.spec, dict) else json.loads(row.spec)
        data = spec.get("dataset", {})
        upload_id = str(data.get("id")).replace("-", "")
        uploaded = uploads.get(upload_id) if data.get("name") == "upload" else None
        if data.get("name") == "regression" or uploaded == "regression":
            regression.add(str(row.id))
    return regression


def assert_stored_metrics_valid(database: str | Engine) -> None:
    """Every stored score of every job in ``database`` (a URL or an engine) is in range."""
    engine = create_engine(database) if isinstance(database, str) else database
    try:
        with engine.connect() as connection:
            regression = _regression_jobs(connection)
            problems: list[str] = []
            for table, column in SCORE_COLUMNS:
                query = text(
                    f"SELECT run.job_id AS job, MIN(m.{column}) AS low, MAX(m.{column}) AS high "
                    f"FROM {table} m JOIN run ON run.id = m.run_id GROUP BY run.job_id"
                )
                for row in connection.execute(query).mappings():
                    problems += _out_of_range(
                        f"{table}.{column}", str(row.job), row.low, row.high, regression
                    )
            query = text(
                "SELECT job_id AS job, MIN(test_accuracy) AS low, MAX(test_accuracy) AS high "
                "FROM run GROUP BY job_id"
            )
            for row in connection.execute(query).mappings():
                problems += _out_of_range(
                    "run.test_accuracy", str(row.job), row.low, row.high, regression
                )
    finally:
        if isinstance(database, str):
            engine.dispose()
    assert not problems, "stored scores out of range:\n" + "\n".join(problems)


def _out_of_range(
    where: str, job: str, low: float | None, high: float | None, regression: set[str]
) -> list[str]:
    if low is None or high is None:
        return []
    is_r2 = _same_job(job, regression)
    if high > 1 + 1e-12 or (not is_r2 and low < -1e-12):
        kind = "R²" if is_r2 else "accuracy"
        return [f"job {job}: {where} ({kind}) from {low} to {high}"]
    return []


def _same_job(job: str, jobs: set[str]) -> bool:
    """Job ids as the two databases spell them (with or without dashes)."""
    return job.replace("-", "") in {other.replace("-", "") for other in jobs}


def assert_records_valid(records: Iterable[Any], regression: bool = False) -> None:
    """Every score on these step or epoch records (or run results) is in range."""
    fields = ("accuracy", "val_accuracy", "train_accuracy", "test_accuracy")
    for record in records:
        for field in fields:
            value = getattr(record, field, None)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            assert value <= 1 + 1e-12, f"{field} {value} > 1 in {record}"
            if not regression:
                assert value >= -1e-12, f"{field} {value} < 0 in {record}"

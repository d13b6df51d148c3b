"""Cancelling a job: before it starts, and while it trains (stopped at the next flush)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.api.app import create_app
from services.db import store
from services.db.models import StepMetric
from services.db.session import unit_of_work
from tests.support import local_client
from tests.unit.test_execution import stored_job
from workers.cancellation import JobCancelled
from workers.engine import Hooks, RunConfig, StepColumns
from workers.execution import execute_job


def test_a_queued_job_is_cancelled_before_it_starts_and_never_trains(
    embedded_home: Path,
) -> None:
    job_id = stored_job()
    with local_client(create_app()) as client:
        answer = client.post(f"/v1/jobs/{job_id}/cancel")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "cancelled"
        assert {run["status"] for run in answer.json()["runs"]} == {"cancelled"}
        again = client.post(f"/v1/jobs/{job_id}/cancel")
        assert again.status_code == 409
        assert "already cancelled" in again.json()["detail"]
    assert execute_job(job_id) == "cancelled"  # a task delivered later does nothing
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(StepMetric)) == 0


class CancelAfterFirstFlush(Hooks):
    """Cancels the job (as the API does) once the first rows are flushed."""

    def __init__(self, job_id: str) -> None:
        self.job_id, self.flushes = job_id, 0

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        self.flushes += 1
        if self.flushes == 1:
            with unit_of_work() as session:
                store.cancel_job(session, store.lock_job(session, self.job_id))


def test_a_running_job_stops_at_the_next_flush_and_keeps_its_steps(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("workers.cancellation.CHECK_EVERY_SECONDS", 0.0)  # every flush
    job_id = stored_job(epochs=20)  # 3 runs x 20 epochs x 3 steps: far more than two flushes
    canceller = CancelAfterFirstFlush(job_id)
    assert execute_job(job_id, extra_hooks=(canceller,)) == "cancelled"
    # The next flush stored its rows, then its check (before this hook) stopped the part.
    assert canceller.flushes == 1
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        stored = session.scalar(select(func.count()).select_from(StepMetric))
        assert job.status == "cancelled"
        assert {run.status for run in job.runs} == {"cancelled"}
        total = sum(run.total_steps or 0 for run in job.runs)
    assert 0 < stored < total  # what was flushed stays; the rest was never trained
    with local_client(create_app()) as client:
        series = client.get(f"/v1/jobs/{job_id}/metrics").json()
    assert sum(len(run["series"]["step"]) for run in series["runs"]) == stored


def test_the_check_is_skipped_while_the_database_cannot_be_reached(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The training goes on (its rows wait in the SQL sink, which retries); an error that is
    not the connection is still raised."""
    import uuid

    from sqlalchemy.exc import OperationalError

    from tests.conftest import reset_process_state
    from tests.support import free_port
    from workers.cancellation import CancellationCheck

    job_id = stored_job()
    with unit_of_work() as session:
        store.cancel_job(session, store.lock_job(session, job_id))
    check = CancellationCheck(uuid.UUID(job_id), every_seconds=0)
    with pytest.raises(JobCancelled):
        check.on_flush([])

    away = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/optbench"
    monkeypatch.setenv("OPTBENCH_DATABASE_URL", away)
    reset_process_state()
    check.on_flush([])  # connection refused: not checked, no error
    check.on_flush([])
    assert check.unreachable

    monkeypatch.setenv("OPTBENCH_DATABASE_URL", f"sqlite:///{embedded_home}/empty.db")
    reset_process_state()
    with pytest.raises(OperationalError, match="no such table"):
        check.on_flush([])


def test_the_status_is_read_at_most_once_in_check_every_seconds(embedded_home: Path) -> None:
    """A small job's flushes come every few milliseconds: it reads the status at the first
    flush a quarter of a second after the last read (or the part's start), and then sees a
    cancellation."""
    import uuid

    from workers.cancellation import CHECK_EVERY_SECONDS, CancellationCheck

    now = [100.0]
    job_id = stored_job()
    check = CancellationCheck(uuid.UUID(job_id), clock=lambda: now[0])
    with unit_of_work() as session:
        store.cancel_job(session, store.lock_job(session, job_id))
    for _ in range(5):  # within the interval: no read, no stop
        now[0] += CHECK_EVERY_SECONDS / 10
        check.on_flush([])
    assert check.checks == 0
    now[0] += CHECK_EVERY_SECONDS
    with pytest.raises(JobCancelled):
        check.on_flush([])
    assert check.checks == 1

"""A training part stamps its runs as alive (workers/leases.py), on the real databases."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from services.db import leases, store
from services.db.leases import worker_name
from services.db.models import SUCCEEDED, Run
from services.db.session import get_engine, unit_of_work
from services.settings import Settings
from services.spec import JobSpec
from workers.leases import Heartbeat

SPEC = JobSpec.model_validate(
    {
        "name": "heartbeats",
        "dataset": {"name": "iris"},
        "model": {"name": "linear"},
        "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam"}, {"name": "rmsprop"}],
        "epochs": 1,
    }
)
INTERVAL = 0.05


def running_job() -> list[int]:
    """A running job's run ids: the first run running, the others queued."""
    with unit_of_work() as session:
        job = store.create_job(session, SPEC)
        store.start_job(session, job, {run.id: 10 for run in job.runs}, "cpu")
        run_ids = [run.id for run in job.runs]
        store.start_run(session, run_ids[0])
    return run_ids


def stamps(run_ids: list[int]) -> dict[int, tuple[datetime | None, str | None]]:
    with unit_of_work() as session:
        rows = session.execute(
            select(Run.id, Run.heartbeat_at, Run.worker).where(Run.id.in_(run_ids))
        )
        return {row[0]: (row[1], row[2]) for row in rows}


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_heartbeat_stamps_at_once_and_every_interval_and_stops_on_exit(database: str) -> None:
    run_ids = running_job()
    with unit_of_work() as session:  # a finished run is not stamped
        session.execute(update(Run).where(Run.id == run_ids[2]).values(status=SUCCEEDED))
    heartbeat = Heartbeat(run_ids, INTERVAL, worker="host-a:101")
    with heartbeat:
        first = stamps(run_ids)
        assert first[run_ids[0]][1] == first[run_ids[1]][1] == "host-a:101"
        assert first[run_ids[0]][0] is not None
        assert first[run_ids[2]] == (None, None)
        assert heartbeat.beats == 1  # written on enter, before the block runs
        wait_for(lambda: heartbeat.beats >= 4)
        later = stamps(run_ids)
        assert later[run_ids[0]][0] > first[run_ids[0]][0]  # type: ignore[operator]
        assert later[run_ids[1]][0] > first[run_ids[1]][0]  # type: ignore[operator]
        assert later[run_ids[2]] == (None, None)
    assert heartbeat._thread is None
    assert not any(thread.name == "optbench-heartbeat" for thread in threading.enumerate())
    beats, last = heartbeat.beats, stamps(run_ids)
    time.sleep(INTERVAL * 6)
    assert heartbeat.beats == beats and stamps(run_ids) == last  # nothing after exit
    assert heartbeat.failures == 0


def test_a_failed_stamp_is_logged_and_tried_again_never_raised(
    database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database away for two ticks (the one on enter included): training goes on."""
    run_ids = running_job()
    real = leases.heartbeat_runs
    calls: list[int] = []

    def blip(session: Session, ids: Any, worker: str) -> int:
        calls.append(1)
        if len(calls) <= 2:
            refused = psycopg.OperationalError('connection to "db-host-7" refused')
            raise OperationalError("UPDATE run", {}, refused)
        return real(session, ids, worker)

    monkeypatch.setattr(leases, "heartbeat_runs", blip)
    with (
        caplog.at_level(logging.WARNING, "workers.leases"),
        Heartbeat(run_ids, INTERVAL, worker="host-b:7") as heartbeat,
    ):
        assert stamps(run_ids)[run_ids[0]] == (None, None)  # the first stamp failed
        wait_for(lambda: heartbeat.beats >= 1)
        assert stamps(run_ids)[run_ids[0]][1] == "host-b:7"  # the third one was written
    assert heartbeat.failures == 2
    assert caplog.text.count("heartbeat of runs") == 2 and "OperationalError" in caplog.text
    assert "db-host-7" not in caplog.text  # a driver's message can name the host


def test_exit_waits_for_a_stamp_being_written(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_ids = running_job()
    real = leases.heartbeat_runs
    entered, slow_started, finished = threading.Event(), threading.Event(), threading.Event()

    def slow(session: Session, ids: Any, worker: str) -> int:
        if entered.is_set():  # the second stamp, from the thread: slow
            slow_started.set()
            time.sleep(0.3)
            count = real(session, ids, worker)
            finished.set()
            return count
        entered.set()
        return real(session, ids, worker)

    monkeypatch.setattr(leases, "heartbeat_runs", slow)
    heartbeat = Heartbeat(run_ids, INTERVAL, worker="host-c:9")
    with heartbeat:
        assert slow_started.wait(5)  # the thread is in its slow stamp now
        assert not finished.is_set()
    assert finished.is_set()  # exit returned after the stamp had been written
    last = stamps(run_ids)
    time.sleep(INTERVAL * 6)
    assert stamps(run_ids) == last and heartbeat.beats == 2


def test_on_postgresql_a_stamp_skips_a_locked_run_instead_of_waiting(postgres_db: str) -> None:
    """Another transaction (the SQL sink) holds a run's row: the stamp neither waits for it
    nor can take part in a deadlock; the next one stamps it."""
    run_ids = running_job()
    with Session(get_engine()) as holder:
        holder.execute(select(Run).where(Run.id == run_ids[0]).with_for_update())
        started = time.monotonic()
        with unit_of_work() as session:
            assert leases.heartbeat_runs(session, run_ids, "host-d:1") == 2
        assert time.monotonic() - started < 2
        holder.rollback()
    assert stamps(run_ids)[run_ids[0]] == (None, None)
    assert stamps(run_ids)[run_ids[1]][1] == "host-d:1"
    with unit_of_work() as session:
        assert leases.heartbeat_runs(session, run_ids, "host-d:1") == 3


def test_on_postgresql_stamps_use_the_database_clock(postgres_db: str) -> None:
    run_ids = running_job()
    with unit_of_work() as session:
        leases.heartbeat_runs(session, run_ids[:1], "host-e:1")
        database_now = store.database_now(session)
    stamped = stamps(run_ids)[run_ids[0]][0]
    assert stamped is not None and stamped == database_now  # one transaction, one now()


def test_no_runs_no_thread(database: str) -> None:
    with Heartbeat([], INTERVAL) as heartbeat:
        assert heartbeat._thread is None
    assert heartbeat.beats == 0


def test_the_worker_is_this_host_and_process() -> None:
    assert worker_name() == f"{socket.gethostname()}:{os.getpid()}"
    assert Heartbeat([1], 10).worker == worker_name()
    with pytest.raises(ValueError):
        Heartbeat([1], 0)


def test_the_timeout_defaults_to_six_heartbeats_and_must_exceed_two(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OPTBENCH_HEARTBEAT_SECONDS", "OPTBENCH_HEARTBEAT_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().heartbeat_seconds == 10 and Settings().heartbeat_timeout == 60
    monkeypatch.setenv("OPTBENCH_HEARTBEAT_SECONDS", "5")
    assert Settings().heartbeat_timeout == 30
    monkeypatch.setenv("OPTBENCH_HEARTBEAT_TIMEOUT_SECONDS", "45")
    assert Settings().heartbeat_timeout == 45
    monkeypatch.setenv("OPTBENCH_HEARTBEAT_TIMEOUT_SECONDS", "9")
    with pytest.raises(ValueError, match="OPTBENCH_HEARTBEAT_TIMEOUT_SECONDS"):
        Settings()


def test_runs_just_stamped_by_their_claim_are_not_stamped_again_on_enter(database: str) -> None:
    run_ids = running_job()
    with Heartbeat(run_ids, 60, worker="host-f:2", stamped=True) as heartbeat:
        assert heartbeat.beats == 0  # the first beat comes after one interval
        assert stamps(run_ids)[run_ids[0]] == (None, None)
    assert heartbeat.beats == 0

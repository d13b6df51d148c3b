"""Deleting jobs and data sets, per-owner upload quotas, checkpoints removed when their run
ends, and the retention of finished jobs (issue 16, point 5): on SQLite and PostgreSQL.

Each deletion is one transaction: the job, its runs, step and epoch rows, step rollups and
checkpoints, or nothing (a failure half-way leaves every row where it was)."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from services import auth, jobs, retention
from services.api.app import create_app
from services.db import checkpoints, store
from services.db.models import (
    EpochMetric,
    Job,
    Run,
    RunCheckpoint,
    StepMetric,
    StepRollup,
    utcnow,
)
from services.db.session import unit_of_work
from services.settings import get_settings
from tests.support import local_client
from tests.unit.test_execution import stored_job
from workers.engine import Hooks, RunConfig, StepColumns
from workers.engine.checkpoint import RunState
from workers.execution import execute_job

CHILDREN = (RunCheckpoint, StepRollup, EpochMetric, StepMetric, Run)


@pytest.fixture
def client(db: str) -> Iterator[TestClient]:
    with local_client(create_app()) as client:
        yield client


def rows_of(job_id: str) -> dict[str, int]:
    """How many rows of each kind the job has."""
    key = uuid.UUID(job_id)
    with unit_of_work() as session:
        runs = select(Run.id).where(Run.job_id == key)
        counts = {
            model.__tablename__: int(
                session.scalar(
                    select(func.count())
                    .select_from(model)
                    .where((model.id if model is Run else model.run_id).in_(runs))
                )
                or 0
            )
            for model in CHILDREN
        }
        counts["job"] = int(session.scalar(select(func.count()).where(Job.id == key)) or 0)
    return counts


def trained_job(**changes: Any) -> str:
    """A small job trained to its end in this process, with a checkpoint row per run."""
    job_id = stored_job(**changes)
    assert execute_job(job_id) == "succeeded"
    with unit_of_work() as session:
        for run in store.get_job(session, job_id).runs:
            checkpoints.save(session, run.id, 1, 0, "alone", b"state")
    return job_id


def test_deleting_a_finished_job_removes_it_and_everything_stored_under_it(
    client: TestClient, db: str
) -> None:
    job_id, other = trained_job(), trained_job()
    before, others = rows_of(job_id), rows_of(other)
    assert before["step_metric"] > 0 and before["epoch_metric"] > 0 and before["run"] == 3
    assert before["run_checkpoint"] == 3
    if db == "postgresql":  # SQLite keeps no rollup
        assert before["step_rollup"] > 0

    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == job_id
    assert body["deleted"] == {
        "runs": 3,
        "step_rows": before["step_metric"],
        "epoch_rows": before["epoch_metric"],
        "step_rollups": before["step_rollup"],
        "checkpoints": 3,
    }
    assert set(rows_of(job_id).values()) == {0}
    assert rows_of(other) == others  # another job's rows are untouched
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    again = client.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 404 and again.headers["content-type"] == "application/problem+json"


def test_a_queued_or_running_job_is_409_cancel_it_first(client: TestClient, db: str) -> None:
    queued = client.post("/v1/jobs", json=SMALL).json()["id"]
    running = stored_job()
    with unit_of_work() as session:
        store.lock_job(session, running).status = "running"
    for job_id, status in ((queued, "queued"), (running, "running")):
        response = client.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
        detail = response.json()["detail"]
        assert f"is {status}" in detail and "cancel it first" in detail
        assert rows_of(job_id)["job"] == 1 and rows_of(job_id)["run"] > 0
    assert client.post(f"/v1/jobs/{queued}/cancel").status_code == 200
    assert client.delete(f"/v1/jobs/{queued}").status_code == 200
    assert rows_of(queued)["job"] == 0


def test_a_cancelled_job_whose_worker_is_still_stopping_is_409_until_it_stopped(
    client: TestClient, db: str
) -> None:
    job_id = stored_job()
    with unit_of_work() as session:
        job = store.lock_job(session, job_id)
        job.status = "running"
        run = job.runs[0]
        run.status, run.worker = "running", "elsewhere:1"  # a worker on another machine
        run.heartbeat_at = store.database_now(session)
        store.cancel_job(session, job)  # cancelled; that worker stops at its next flush
    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 409, response.text
    assert "still stopping" in response.json()["detail"]
    assert int(response.headers["retry-after"]) >= 1
    assert rows_of(job_id)["run"] == 3
    with unit_of_work() as session:  # the worker stopped: its part cleared its stamp
        session.execute(update(Run).where(Run.job_id == uuid.UUID(job_id)).values(worker=None))
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200


def test_a_failed_job_whose_other_parts_still_train_is_409_until_they_end(
    client: TestClient, db: str
) -> None:
    job_id = stored_job()
    with unit_of_work() as session:
        job = store.lock_job(session, job_id)
        job.status = "running"
        first, second = job.runs[0], job.runs[1]
        first.status, first.worker = "running", "elsewhere:1"  # another part, still training
        first.heartbeat_at = store.database_now(session)
        store.fail_runs(session, job, [second.id], "RuntimeError: boom")
        store.fail_job(session, job, "RuntimeError: boom")  # one part failed the job
    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 409, response.text
    assert f"runs {first.id} were written" in response.json()["detail"]
    with unit_of_work() as session:  # that part finished its run
        session.get_one(Run, first.id).status = "succeeded"
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200


def test_a_failure_half_way_deletes_nothing(
    client: TestClient, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = trained_job()
    before = rows_of(job_id)
    real = store.delete_job_rows

    def failing(session: Any, key: uuid.UUID) -> Any:
        real(session, key)  # every row deleted in the transaction ...
        assert rows_of(job_id)["job"] == 1  # (not yet for anyone else: not committed)
        raise RuntimeError("the database went away")  # ... which then fails

    monkeypatch.setattr(store, "delete_job_rows", failing)
    with pytest.raises(RuntimeError):
        jobs.delete(job_id)
    assert rows_of(job_id) == before


def test_another_owner_gets_404_and_deletes_nothing(db: str) -> None:
    app = create_app()
    alice, bob = auth.create_key("alice").token, auth.create_key("bob").token
    with local_client(app, headers={"Authorization": f"Bearer {alice}"}) as client:
        data = client.post("/v1/datasets", files={"file": ("d.npz", npz())}).json()["id"]
    job_id = trained_job()
    with unit_of_work() as session:
        store.get_job(session, job_id).owner = "alice"
    with local_client(app, headers={"Authorization": f"Bearer {bob}"}) as client:
        for url in (f"/v1/jobs/{job_id}", f"/v1/datasets/{data}"):
            response = client.delete(url)
            assert response.status_code == 404, response.text
            assert "alice" not in response.text
    with local_client(app, headers={"Authorization": f"Bearer {alice}"}) as client:
        assert client.get(f"/v1/datasets/{data}").status_code == 200
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
        assert client.delete(f"/v1/datasets/{data}").status_code == 200


# --- data sets -----------------------------------------------------------------------------


def npz(samples: int = 40, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    x = np.random.default_rng(seed).normal(size=(samples, 3))
    np.savez(buffer, x=x, y=(x[:, 0] > 0).astype(int))
    return buffer.getvalue()


SMALL = {
    "name": "small",
    "dataset": {"name": "iris"},
    "model": {"name": "linear"},
    "optimizers": [{"name": "sgd", "lr": 0.1}],
    "epochs": 1,
}


def test_a_data_set_in_use_by_a_queued_job_is_409_then_deletable(
    client: TestClient, db: str
) -> None:
    uploaded = client.post("/v1/datasets", files={"file": ("d.npz", npz())})
    assert uploaded.status_code == 201, uploaded.text
    data = uploaded.json()["id"]
    spec = {**SMALL, "dataset": {"name": "upload", "id": data}}
    job = client.post("/v1/jobs", json=spec).json()["id"]

    response = client.delete(f"/v1/datasets/{data}")
    assert response.status_code == 409, response.text
    assert job in response.json()["detail"] and "queued" in response.json()["detail"]
    assert client.get(f"/v1/datasets/{data}").status_code == 200

    assert client.post(f"/v1/jobs/{job}/cancel").status_code == 200
    deleted = client.delete(f"/v1/datasets/{data}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["id"] == data
    assert client.get(f"/v1/datasets/{data}").status_code == 404
    assert client.get("/v1/datasets").json()["total"] == 0
    refused = client.post("/v1/jobs", json=spec)  # a new job may not name it any more
    assert refused.status_code == 422 and "no uploaded data set" in refused.json()["detail"]
    assert client.get(f"/v1/jobs/{job}").status_code == 200  # the job itself stays


# --- quotas --------------------------------------------------------------------------------


def test_upload_quotas_in_count_and_bytes_name_the_setting(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = len(npz())
    monkeypatch.setenv("OPTBENCH_MAX_DATASETS_PER_OWNER", "2")
    monkeypatch.setenv("OPTBENCH_MAX_DATASET_BYTES_PER_OWNER", str(3 * size))
    get_settings.cache_clear()
    app = create_app()
    alice, bob = auth.create_key("alice").token, auth.create_key("bob").token
    with local_client(app, headers={"Authorization": f"Bearer {alice}"}) as client:
        first, second = (
            client.post("/v1/datasets", files={"file": ("d.npz", npz(seed=i))}).json()["id"]
            for i in (1, 2)
        )
        third = client.post("/v1/datasets", files={"file": ("d.npz", npz(seed=3))})
        assert third.status_code == 429, third.text
        assert third.headers["content-type"] == "application/problem+json"
        problem = third.json()
        assert "OPTBENCH_MAX_DATASETS_PER_OWNER" in problem["detail"]
        assert "DELETE /v1/datasets" in problem["detail"]
        assert problem["quota"] == {
            "setting": "OPTBENCH_MAX_DATASETS_PER_OWNER",
            "maximum": 2,
            "used": 2,
            "requested": 1,
        }
        assert client.get("/v1/datasets").json()["total"] == 2

        assert client.delete(f"/v1/datasets/{first}").status_code == 200  # room for one more
        big = client.post("/v1/datasets", files={"file": ("big.npz", npz(samples=200))})
        assert big.status_code == 413, big.text
        problem = big.json()
        assert "OPTBENCH_MAX_DATASET_BYTES_PER_OWNER" in problem["detail"]
        assert problem["quota"]["setting"] == "OPTBENCH_MAX_DATASET_BYTES_PER_OWNER"
        assert problem["quota"]["used"] == size and problem["quota"]["maximum"] == 3 * size
        assert problem["quota"]["requested"] > 2 * size
        assert client.post("/v1/datasets", files={"file": ("d.npz", npz())}).status_code == 201
        assert {d["id"] for d in client.get("/v1/datasets").json()["items"]} >= {second}
    with local_client(app, headers={"Authorization": f"Bearer {bob}"}) as client:
        # the quota is per owner: bob's uploads do not count alice's
        assert client.post("/v1/datasets", files={"file": ("d.npz", npz())}).status_code == 201


# --- checkpoints end with their run --------------------------------------------------------


class CountCheckpoints(Hooks):
    """Counts the stored checkpoint rows each time checkpoints are taken (after the
    checkpoint sink wrote them), so a test knows there were some to remove."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_checkpoint(self, states: Sequence[tuple[RunConfig, RunState]]) -> None:
        with unit_of_work() as session:
            self.seen.append(int(session.scalar(select(func.count(RunCheckpoint.run_id))) or 0))


class CancelAtSecondEpoch(CountCheckpoints):
    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        if self.seen:  # after the first checkpoint
            with unit_of_work() as session:
                store.cancel_job(session, store.lock_job(session, self.job_id))


@pytest.fixture
def checkpoint_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTBENCH_CHECKPOINT_EVERY_STEPS", "1")
    monkeypatch.setenv("OPTBENCH_CHECKPOINT_MIN_SECONDS", "0")
    get_settings.cache_clear()


def checkpoint_rows() -> int:
    with unit_of_work() as session:
        return int(session.scalar(select(func.count(RunCheckpoint.run_id))) or 0)


def test_checkpoints_are_removed_when_their_runs_end(db: str, checkpoint_often: None) -> None:
    counter = CountCheckpoints()
    job_id = stored_job(epochs=3, execution={"fuse": False})  # runs one after another
    assert execute_job(job_id, extra_hooks=(counter,)) == "succeeded"
    assert counter.seen and max(counter.seen) >= 1  # there were checkpoints while training
    # each run's checkpoint went when it ended: one at a time while training, none after
    assert max(counter.seen) == 1
    assert checkpoint_rows() == 0


def test_a_cancelled_part_removes_its_checkpoints_and_can_be_deleted_at_once(
    client: TestClient, db: str, checkpoint_often: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The part reads its job's status at every flush here, not at most every quarter second
    # (workers/cancellation.py): on a fast machine 20 epochs of this job end sooner.
    monkeypatch.setattr("workers.cancellation.CHECK_EVERY_SECONDS", 0.0)
    job_id = stored_job(epochs=20)
    canceller = CancelAtSecondEpoch(job_id)
    assert execute_job(job_id, extra_hooks=(canceller,)) == "cancelled"
    assert canceller.seen and canceller.seen[0] >= 1
    assert checkpoint_rows() == 0
    with unit_of_work() as session:  # the stopped part no longer holds its cancelled runs
        runs = store.get_job(session, job_id).runs
        cancelled = [run for run in runs if run.status == "cancelled"]
        assert cancelled and {run.worker for run in cancelled} == {None}
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200


# --- retention -----------------------------------------------------------------------------


def aged(job_id: str, days: float) -> None:
    with unit_of_work() as session:
        job = store.get_job(session, job_id, with_runs=False)
        job.created_at = job.finished_at = utcnow() - timedelta(days=days)


def test_retention_deletes_finished_jobs_older_than_the_setting_only(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, recent, old_queued = trained_job(), trained_job(), stored_job()
    aged(old, 3)
    aged(recent, 0.5)
    with unit_of_work() as session:  # queued for 3 days: not finished, never swept
        store.get_job(session, old_queued).created_at = utcnow() - timedelta(days=3)
    assert get_settings().job_retention_days == 0  # off by default
    assert retention.sweep() == []
    monkeypatch.setenv("OPTBENCH_JOB_RETENTION_DAYS", "1")
    get_settings.cache_clear()
    assert retention.sweep() == [uuid.UUID(old)]
    assert rows_of(old)["job"] == 0 and rows_of(old)["step_metric"] == 0
    assert rows_of(recent)["job"] == 1 and rows_of(old_queued)["job"] == 1
    assert retention.sweep() == []


def test_the_api_sweeps_on_start_when_retention_is_set(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = trained_job()
    aged(old, 10)
    monkeypatch.setenv("OPTBENCH_JOB_RETENTION_DAYS", "7")
    get_settings.cache_clear()
    with local_client(create_app()):
        deadline = time.monotonic() + 10
        while rows_of(old)["job"] and time.monotonic() < deadline:
            time.sleep(0.1)
    assert rows_of(old)["job"] == 0


def test_bad_retention_and_quota_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (
        ("OPTBENCH_JOB_RETENTION_DAYS", "-1"),
        ("OPTBENCH_MAX_DATASETS_PER_OWNER", "0"),
        ("OPTBENCH_MAX_DATASET_BYTES_PER_OWNER", "0"),
    ):
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        with pytest.raises(ValueError, match=name.removeprefix("OPTBENCH_").lower()):
            get_settings()
        monkeypatch.delenv(name)
    get_settings.cache_clear()

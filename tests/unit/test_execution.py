"""Running a stored job: statuses move queued → running → succeeded | failed."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update

from services.db import store
from services.db.models import Run
from services.db.session import unit_of_work
from services.spec import JobSpec
from workers.execution import execute_job

SPEC = {
    "dataset": {
        "name": "classification",
        "n_samples": 200,
        "n_features": 6,
        "n_informative": 3,
        "n_classes": 2,
    },
    "model": {"name": "linear"},
    "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam"}, {"name": "rmsprop"}],
    "epochs": 2,
    "batch_size": 40,
}


def stored_job(**changes: object) -> str:
    with unit_of_work() as session:
        return str(store.create_job(session, JobSpec.model_validate({**SPEC, **changes})).id)


def test_a_job_succeeds_with_its_summary_and_is_not_run_twice(embedded_home: Path) -> None:
    job_id = stored_job()
    assert execute_job(job_id) == "succeeded"
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        finished_at = job.finished_at
        assert [run.status for run in job.runs] == ["succeeded"] * 3
        assert job.started_at and finished_at and job.device == "cpu"
        assert [row["label"] for row in job.summary["optimizers"]] == ["sgd", "adam", "rmsprop"]
    assert execute_job(job_id) == "succeeded"  # a redelivered task finds it done
    with unit_of_work() as session:
        assert store.get_job(session, job_id).finished_at == finished_at


def test_a_failing_run_fails_the_job_with_a_readable_error(embedded_home: Path) -> None:
    job_id = stored_job(execution={"fuse": False})  # runs one after another
    with unit_of_work() as session:
        second = store.get_job(session, job_id).runs[1].id
        # A stored spec that torch refuses (the API would never accept it).
        session.execute(update(Run).where(Run.id == second).values(hyperparameters={"lr": -1.0}))
    assert execute_job(job_id) == "failed"
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        assert job.status == "failed"
        assert job.error == "ValueError: Invalid learning rate: -1.0"
        first, failed, never = job.runs
        assert (
            first.status == "succeeded" and first.steps_done == 2 * 3
        )  # 120 training samples / 40
        assert failed.status == "failed" and failed.error == job.error
        assert never.status == "failed" and never.error.startswith("not started")

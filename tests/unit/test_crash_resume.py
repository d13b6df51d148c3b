"""A stored job whose worker dies mid-run (a BaseException nothing catches, as the process
vanishing would leave it: runs ``running``, rows and a checkpoint stored) is taken over by
the next delivery: it resumes from the checkpoints, supersedes the rows stored after them,
and ends with every step stored once, equal to an uninterrupted job's. A run that keeps
killing its workers fails its job; a run a live worker holds is not trained twice."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from services.db import leases, store
from services.db.models import EpochMetric, Run, RunCheckpoint, StepMetric, StepRollup
from services.db.session import unit_of_work
from services.spec import JobSpec
from tests.conftest import reset_process_state
from workers import shutdown
from workers.engine import Hooks, RunConfig, StepColumns
from workers.engine.checkpoint import RunState
from workers.execution import execute_job, execute_part

SPEC = {
    "dataset": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [16]},
    "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam"}, {"name": "nag"}],
    "epochs": 2,
    "batch_size": 64,  # 1,078 training samples: 17 steps per epoch
}
STEPS = 2 * 17


class WorkerDied(BaseException):
    """Not an Exception: nothing in the worker catches it, as nothing survives a kill -9."""


class DieAfterCheckpoint(Hooks):
    def __init__(self, after_step: int) -> None:
        self.after_step, self.checkpoints = after_step, 0

    def on_checkpoint(self, states: Sequence[tuple[RunConfig, RunState]]) -> None:
        self.checkpoints += 1

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        if self.checkpoints and max(int(steps.step[-1]) for _, steps in batch) > self.after_step:
            raise WorkerDied


@pytest.fixture
def checkpointing(database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPTBENCH_FLUSH_EVERY_STEPS", "4")
    monkeypatch.setenv("OPTBENCH_CHECKPOINT_EVERY_STEPS", "8")
    monkeypatch.setenv("OPTBENCH_CHECKPOINT_MIN_SECONDS", "0")
    monkeypatch.setenv("OPTBENCH_MAX_ATTEMPTS", "2")
    reset_process_state()
    return database


def stored_job() -> str:
    with unit_of_work() as session:
        return str(store.create_job(session, JobSpec.model_validate(SPEC)).id)


def step_rows(job_id: str) -> dict[str, list[tuple[int, float, float]]]:
    with unit_of_work() as session:
        runs = store.get_job(session, job_id).runs
        return {
            run.label: [
                (row.step, row.loss, row.grad_norm)
                for row in session.scalars(
                    select(StepMetric).where(StepMetric.run_id == run.id).order_by(StepMetric.step)
                )
            ]
            for run in runs
        }


def epoch_rows(job_id: str) -> dict[str, list[tuple[int, float]]]:
    with unit_of_work() as session:
        runs = store.get_job(session, job_id).runs
        return {
            run.label: [
                (row.epoch, row.val_loss)
                for row in session.scalars(
                    select(EpochMetric)
                    .where(EpochMetric.run_id == run.id)
                    .order_by(EpochMetric.epoch)
                )
            ]
            for run in runs
        }


def run_ids(job_id: str) -> list[int]:
    with unit_of_work() as session:
        return [run.id for run in store.get_job(session, job_id).runs]


def age_heartbeats(job_id: str) -> None:
    """What the heartbeat timeout does to a dead worker's runs."""
    with unit_of_work() as session:
        session.execute(
            update(Run)
            .where(Run.id.in_(run_ids(job_id)))
            .values(heartbeat_at=store.database_now(session) - timedelta(hours=1))
        )


def test_a_job_whose_worker_died_resumes_to_the_uninterrupted_series(checkpointing: str) -> None:
    reference = stored_job()
    assert execute_job(reference) == "succeeded"

    job_id = stored_job()
    dying = DieAfterCheckpoint(after_step=30)
    with pytest.raises(WorkerDied):
        execute_job(job_id, extra_hooks=(dying,))
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        # Every run died here, held by this process: none trained by another one (a live
        # worker on this database takes its queued jobs too: SESSION_CLUSTER_ENV in
        # tests/integration/conftest.py keeps the session's cluster from sending them).
        held = {(run.label, run.status, run.worker) for run in job.runs}
        assert job.status == "running"
        me = leases.worker_name()
        assert held == {(label, "running", me) for label in ("sgd", "adam", "nag")}
        saved = {
            row.run_id: row.step
            for row in session.scalars(
                select(RunCheckpoint).where(RunCheckpoint.run_id.in_(run_ids(job_id)))
            )
        }
    # fused: one checkpoint step for every member, before the death, with steps stored past it
    (checkpoint,) = set(saved.values())
    assert len(saved) == 3 and 8 <= checkpoint <= 30
    assert all(len(rows) > checkpoint for rows in step_rows(job_id).values())

    age_heartbeats(job_id)
    assert execute_part(job_id, run_ids(job_id), threads=1) == "succeeded"
    expected, got = step_rows(reference), step_rows(job_id)
    for label, rows in expected.items():
        assert [step for step, *_ in got[label]] == list(range(1, STEPS + 1))
        for (_, loss, norm), (_, want_loss, want_norm) in zip(got[label], rows, strict=True):
            assert abs(loss - want_loss) <= 1e-6 and abs(norm - want_norm) <= 1e-6
    want_epochs, got_epochs = epoch_rows(reference), epoch_rows(job_id)
    for label, rows in want_epochs.items():
        assert [epoch for epoch, _ in got_epochs[label]] == [1, 2]
        assert [loss for _, loss in got_epochs[label]] == pytest.approx(
            [loss for _, loss in rows], abs=1e-6
        )
    with unit_of_work() as session:
        runs = store.get_job(session, job_id).runs
        assert [run.attempts for run in runs] == [2, 2, 2]
        assert all(run.steps_done == STEPS for run in runs)
        if checkpointing == "postgresql":  # the rollup sums what step_metric holds, once
            for run in runs:
                blocks = session.scalars(
                    select(StepRollup).where(StepRollup.run_id == run.id).order_by("block")
                ).all()
                assert [(b.first_step, b.last_step) for b in blocks] == [(1, STEPS)]


def test_a_run_that_keeps_killing_its_workers_fails_the_job(checkpointing: str) -> None:
    job_id = stored_job()
    for _ in range(2):  # OPTBENCH_MAX_ATTEMPTS=2
        with pytest.raises(WorkerDied):
            execute_part(job_id, run_ids(job_id), threads=1, extra_hooks=(DieAfterCheckpoint(0),))
        age_heartbeats(job_id)
    assert execute_part(job_id, run_ids(job_id), threads=1) == "failed"
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        assert job.status == "failed" and "gave up after 2 attempts" in (job.error or "")
        assert {run.status for run in job.runs} == {"failed"}


def test_runs_a_live_worker_holds_are_not_trained_twice(checkpointing: str) -> None:
    job_id = stored_job()
    ids = run_ids(job_id)
    with unit_of_work() as session:
        session.execute(
            update(Run)
            .where(Run.id == ids[0])
            .values(
                status="running",
                heartbeat_at=store.database_now(session),
                worker="another-host:4242",
            )
        )
    with unit_of_work() as session:
        session.execute(update(store.Job).values(status="running"))
    assert execute_part(job_id, ids, threads=1) == "running"  # its first run is still open
    with unit_of_work() as session:
        first, *others = store.get_job(session, job_id).runs
        assert first.status == "running" and first.steps_done == 0 and first.attempts == 0
        assert all(run.status == "succeeded" and run.attempts == 1 for run in others)


class StopWorkerAfter(Hooks):
    """Asks this worker to shut down (as SIGTERM does) once a flush passes ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        if max(int(steps.step[-1]) for _, steps in batch) > self.step:
            shutdown.request()


class CountSteps(Hooks):
    def __init__(self) -> None:
        self.steps: dict[int, list[int]] = {}

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        for run, steps in batch:
            self.steps.setdefault(run.key, []).extend(steps.step.tolist())


def test_a_stopping_worker_checkpoints_and_sends_its_runs_back(
    checkpointing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTBENCH_JOB_PARTS", "1")
    reset_process_state()
    reference = stored_job()
    assert execute_job(reference) == "succeeded"
    job_id = stored_job()
    sent: list[tuple[str, list[int], int, int, int]] = []
    try:
        status = execute_job(
            job_id,
            send_part=lambda *part: sent.append(part),
            extra_hooks=(StopWorkerAfter(step=10),),
        )
    finally:
        shutdown.reset()
    assert status == "running"
    ((sent_job, sent_runs, _, _, _),) = sent  # one part (no other worker process here)
    assert sent_job == job_id and sorted(sent_runs) == run_ids(job_id)
    with unit_of_work() as session:
        runs = store.get_job(session, job_id).runs
        assert {(run.status, run.attempts, run.worker) for run in runs} == {
            ("running", 0, leases.REQUEUED_WORKER)
        }
        stopped_at = {
            row.run_id: row.step
            for row in session.scalars(
                select(RunCheckpoint).where(RunCheckpoint.run_id.in_(run_ids(job_id)))
            )
        }
    # the checkpoint was taken at the flush that saw the request: nothing to train again
    assert {len(rows) for rows in step_rows(job_id).values()} == set(stopped_at.values())
    counted = CountSteps()
    assert execute_part(job_id, sent_runs, threads=1, extra_hooks=(counted,)) == "succeeded"
    assert all(steps[0] == stopped_at[key] + 1 for key, steps in counted.steps.items())
    for label, rows in step_rows(reference).items():
        got = step_rows(job_id)[label]
        assert [step for step, *_ in got] == [step for step, *_ in rows]
        assert max(abs(a[1] - b[1]) for a, b in zip(got, rows, strict=True)) <= 1e-6


def test_a_job_whose_worker_died_before_finalising_it_is_finalised(checkpointing: str) -> None:
    """Every run ended, but the part's worker died before it finalised the job: the
    reconciler sends a part without runs, and the worker that takes it finalises the job."""
    from services.reconcile import reconcile

    job_id = stored_job()
    assert execute_job(job_id) == "succeeded"
    with unit_of_work() as session:  # as the dead worker left it
        session.execute(update(store.Job).values(status="running", finished_at=None, summary=None))
    sent: list[tuple[str, list[int], int, int, int]] = []
    with unit_of_work() as session:
        now = store.database_now(session)
    assert reconcile(now, send_part=lambda *part: sent.append(part)).finalised == []  # too soon
    later = now + timedelta(hours=1)
    result = reconcile(later, send_part=lambda *part: sent.append(part))
    assert [str(job) for job in result.finalised] == [job_id]
    ((sent_job, runs, *_),) = sent
    assert execute_part(sent_job, runs, threads=1) == "succeeded"
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        assert job.status == "succeeded" and job.summary and job.finished_at

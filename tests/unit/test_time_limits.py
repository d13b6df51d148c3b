"""Wall-time limits (workers/timelimits.py): a job, or one of its parts, that runs past its
limit fails with the reason, its steps up to the last flush stored; a part that waited in
the queue past its job's limit trains nothing."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.db import store
from services.db.models import StepMetric
from services.db.session import unit_of_work
from services.settings import get_settings
from services.spec import JobSpec
from workers import execution, timelimits
from workers.engine import Hooks, RunConfig, StepColumns
from workers.execution import execute_job, execute_part
from workers.timelimits import Deadlines, TimeLimitExceeded

LONG = {
    "dataset": {"name": "classification", "n_samples": 3000, "n_features": 20, "n_classes": 2},
    "model": {"name": "mlp", "hidden": [64]},
    "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam"}, {"name": "rmsprop"}],
    "epochs": 50,  # 45 steps an epoch, flushed every 100 steps and at each epoch end
    "batch_size": 40,
    "execution": {"fuse": False},
}
HOUR = 3600.0


class Clock:
    """The workers' monotonic clock, which a test moves on: a limit of an hour passes at
    the flush the test chooses, however long the machine takes to load and train."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


class JumpAtFirstFlush(Hooks):
    """Two hours pass during the first flush (after the limit check of that flush)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        if not self.clock.offset:
            self.clock.offset = 2 * HOUR


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    for module in (execution, timelimits):
        monkeypatch.setattr(module, "time", fake)
    return fake


def limits(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(f"OPTBENCH_{name.upper()}", value)
    get_settings.cache_clear()


def stored_job(spec: dict[str, object]) -> str:
    with unit_of_work() as session:
        return str(store.create_job(session, JobSpec.model_validate(spec)).id)


def steps_stored(job_id: str) -> int:
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        ids = [run.id for run in job.runs]
        return int(session.scalar(select(func.count()).where(StepMetric.run_id.in_(ids))) or 0)


def test_a_part_over_its_wall_time_fails_the_job_with_the_reason(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    limits(monkeypatch, max_part_seconds=str(HOUR))
    job_id = stored_job(LONG)
    assert execute_job(job_id, extra_hooks=(JumpAtFirstFlush(clock),)) == "failed"
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        assert job.error.startswith(f"TimeLimitExceeded: part 1/1 of job {job_id} ran for 7,")
        assert "limit of 3,600 s per part (OPTBENCH_MAX_PART_SECONDS)" in job.error
        assert "more parts (OPTBENCH_JOB_PARTS)" in job.error
        assert [run.status for run in job.runs] == ["failed"] * 3
        first = job.runs[0]
        assert first.error == job.error
        assert first.total_steps == 50 * 45
    # It stopped at the second flush (step 100 + 45 of the first run), both flushes stored.
    assert steps_stored(job_id) == 90


def test_a_part_within_its_limits_is_not_stopped(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    limits(monkeypatch, max_part_seconds=str(3 * HOUR), max_job_seconds=str(3 * HOUR))
    job_id = stored_job({**LONG, "epochs": 3})
    assert execute_job(job_id, extra_hooks=(JumpAtFirstFlush(clock),)) == "succeeded"


def test_a_job_over_its_wall_time_fails_at_the_next_flush(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    limits(monkeypatch, max_job_seconds=str(HOUR))
    job_id = stored_job(LONG)
    assert execute_job(job_id, extra_hooks=(JumpAtFirstFlush(clock),)) == "failed"
    with unit_of_work() as session:
        error = store.get_job(session, job_id, with_runs=False).error
    assert error.startswith(f"TimeLimitExceeded: job {job_id} ran for 7,")
    assert "wall-time limit of 3,600 s (OPTBENCH_MAX_JOB_SECONDS)" in error
    assert "split the comparison into several jobs" in error


def test_a_part_that_waited_past_its_job_s_limit_trains_nothing(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits(monkeypatch, job_parts="2", max_job_seconds="3600")
    short = {**LONG, "epochs": 1}
    job_id = stored_job(short)
    sent: list[tuple[str, list[int], int, int, int]] = []
    assert execute_job(job_id, send_part=lambda *part: sent.append(part)) == "running"
    assert len(sent) == 1  # part 2 waits in the queue...
    with unit_of_work() as session:  # ...while the job has been running for two hours
        job = store.get_job(session, job_id, with_runs=False)
        assert job.started_at is not None
        job.started_at -= timedelta(hours=2)
    before = steps_stored(job_id)
    _, run_ids, threads, part, parts = sent[0]
    assert execute_part(job_id, run_ids, threads, part=part, parts=parts) == "failed"
    assert steps_stored(job_id) == before  # part 2 trained nothing
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        assert "OPTBENCH_MAX_JOB_SECONDS" in job.error and "ran for 7,2" in job.error
        assert {run.status for run in job.runs if run.id in run_ids} == {"failed"}


def test_deadlines_say_which_limit_passed() -> None:
    # The part started at 100 s (monotonic) with 50 s to go; the job at 0 s with 200 s.
    deadlines = Deadlines("job j", "part 2/3", 100.0, 50.0, 0.0, 200.0)
    deadlines.check(now=149.0)
    with pytest.raises(TimeLimitExceeded, match=r"^part 2/3 of job j ran for 51 s, .* 50 s"):
        deadlines.check(now=151.0)
    job_first = Deadlines("job j", "part 2/3", 100.0, 50.0, 0.0, 120.0)
    with pytest.raises(TimeLimitExceeded, match=r"^job j ran for 130 s, .* 120 s"):
        job_first.check(now=130.0)


def test_the_limits_have_sane_defaults(embedded_home: Path) -> None:
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.max_job_seconds == 24 * HOUR  # a day
    assert settings.max_part_seconds == 6 * HOUR  # what another owner waits at most
    assert settings.max_part_seconds <= settings.max_job_seconds
    assert settings.max_job_flops == 2e15

"""Running a stored job: statuses move queued → running → succeeded | failed; a job split
into parts (workers/parts.py) is finalised once, by the part that ends last."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import func, select, update

from services.db import store
from services.db.models import Run, StepMetric
from services.db.session import unit_of_work
from services.settings import get_settings
from services.spec import JobSpec
from workers.engine import Hooks, RunResult
from workers.execution import execute_job, execute_part, finalise_job
from workers.parts import cpu_cores

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


# --- parts -----------------------------------------------------------------------------------

FOUR = {
    **SPEC,
    "optimizers": [
        {"name": "sgd", "lr": 0.1},
        {"name": "adam"},
        {"name": "rmsprop"},
        {"name": "adagrad"},
    ],
}


@dataclass
class Sent:
    """Parts a planning task sent to the queue (job id, run ids, threads, part, parts)."""

    parts: list[tuple[str, list[int], int, int, int]] = field(default_factory=list)

    def __call__(self, job_id: str, run_ids: list[int], threads: int, part: int, n: int) -> None:
        json.dumps([job_id, run_ids, threads, part, n])  # what Celery's JSON must carry
        self.parts.append((job_id, run_ids, threads, part, n))

    def run(self, index: int) -> str:
        job_id, run_ids, threads, part, n = self.parts[index]
        return execute_part(job_id, run_ids, threads, part=part, parts=n)


def stored(spec: dict[str, Any]) -> str:
    with unit_of_work() as session:
        return str(store.create_job(session, JobSpec.model_validate(spec)).id)


def with_parts(monkeypatch: pytest.MonkeyPatch, parts: str) -> None:
    monkeypatch.setenv("OPTBENCH_JOB_PARTS", parts)
    get_settings.cache_clear()


def step_rows(job_id: str) -> list[tuple[int, int, int]]:
    """Per run: (stored step rows, distinct steps, total steps)."""
    with unit_of_work() as session:
        return [
            (
                session.scalar(select(func.count()).where(StepMetric.run_id == run.id)) or 0,
                session.scalar(
                    select(func.count(func.distinct(StepMetric.step))).where(
                        StepMetric.run_id == run.id
                    )
                )
                or 0,
                run.total_steps or 0,
            )
            for run in store.get_job(session, job_id).runs
        ]


def test_a_job_in_two_parts_is_finalised_by_the_part_that_ends_last(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_parts(monkeypatch, "2")
    job_id, sent = stored(FOUR), Sent()
    assert execute_job(job_id, send_part=sent) == "running"  # part 1 done, part 2 queued
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        ids = [run.id for run in job.runs]
        assert [run.status for run in job.runs] == ["succeeded"] * 2 + ["queued"] * 2
        assert job.status == "running" and job.summary is None
    threads = max(1, cpu_cores() // 2)  # the cores shared by the two parts
    assert sent.parts == [(job_id, ids[2:], threads, 2, 2)]
    assert sent.run(0) == "succeeded"
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        finished_at = job.finished_at
        assert [run.status for run in job.runs] == ["succeeded"] * 4
        assert [row["label"] for row in job.summary["optimizers"]] == [
            "sgd",
            "adam",
            "rmsprop",
            "adagrad",
        ]
    assert all(count == distinct == total == 6 for count, distinct, total in step_rows(job_id))
    # Redelivered: the part and the planning task find everything done.
    assert sent.run(0) == "succeeded"
    assert execute_job(job_id, send_part=sent) == "succeeded" and len(sent.parts) == 1
    with unit_of_work() as session:
        assert store.get_job(session, job_id).finished_at == finished_at


def test_a_redelivered_planning_task_sends_again_only_parts_that_never_started(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_parts(monkeypatch, "2")
    job_id, sent = stored(FOUR), Sent()
    execute_job(job_id, send_part=sent)
    # Its worker died after sending part 2: the task comes again. Part 2 never started, so
    # it is sent again (a duplicate, if the first copy is still queued, finds its runs done).
    assert execute_job(job_id, send_part=sent) == "running"
    assert len(sent.parts) == 2 and sent.parts[0] == sent.parts[1]
    assert sent.run(0) == "succeeded" and sent.run(1) == "succeeded"
    # Once part 2 has started, a redelivered planning task leaves it to its own task.
    job_id, sent = stored(FOUR), Sent()
    execute_job(job_id, send_part=sent)
    with unit_of_work() as session:
        store.start_run(session, sent.parts[0][1][0])
    execute_job(job_id, send_part=sent)
    assert len(sent.parts) == 1
    assert sent.run(0) == "succeeded"
    assert all(count == distinct == total for count, distinct, total in step_rows(job_id))


def test_a_failing_part_fails_the_job_and_later_parts_train_nothing(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_parts(monkeypatch, "3")
    spec = {**FOUR, "optimizers": [*FOUR["optimizers"], {"name": "adamw"}, {"name": "nadam"}]}
    job_id, sent = stored(spec), Sent()
    with unit_of_work() as session:
        bad = store.get_job(session, job_id).runs[2].id  # in part 2
        session.execute(update(Run).where(Run.id == bad).values(hyperparameters={"lr": -1.0}))
    assert execute_job(job_id, send_part=sent) == "running"
    assert [part[1] for part in sent.parts] == [[bad, bad + 1], [bad + 2, bad + 3]]
    assert sent.run(0) == "failed"
    assert sent.run(1) == "failed"  # the job had failed: part 3 trains nothing
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        assert job.status == "failed"
        assert job.error == "ValueError: Invalid learning rate: -1.0"
        statuses = [(run.status, run.error) for run in job.runs]
    assert statuses[:2] == [("succeeded", None)] * 2  # part 1, trained before the failure
    assert [status for status, _ in statuses[2:4]] == ["failed"] * 2  # part 2's runs
    assert statuses[4:] == [("failed", "not started: the job failed before this run")] * 2
    # A part that was still training when the job failed ends; the job stays failed.
    assert finalise_job(uuid.UUID(job_id)) == "failed"


def test_parts_ending_at_once_finalise_the_job_once(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two parts finish their last runs at the same moment and both try to finalise: the row
    lock lets one in first; the other then sees the job already succeeded."""
    with_parts(monkeypatch, "2")
    job_id, sent = stored(FOUR), Sent()
    execute_job(job_id, send_part=sent)
    with unit_of_work() as session:  # part 2's runs finished, as if trained this instant
        for run in store.get_job(session, job_id).runs[2:]:
            store.finish_run(session, run.id, RunResult(steps=6, diverged=False, train_seconds=0))

    import workers.execution as execution

    summaries: list[str] = []
    summarise = execution.job_summary

    def slow_summary(session: Any, job: Any) -> dict[str, Any]:
        summaries.append(threading.current_thread().name)
        time.sleep(0.5)  # the window in which a second part could finalise too
        return summarise(session, job)

    monkeypatch.setattr(execution, "job_summary", slow_summary)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def part_ends(name: str) -> None:
        barrier.wait()
        outcomes[name] = finalise_job(uuid.UUID(job_id))

    threads = [threading.Thread(target=part_ends, args=(n,), name=n) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes == {"a": "succeeded", "b": "succeeded"}
    assert len(summaries) == 1
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        assert job.status == "succeeded" and job.summary is not None


def test_threads_per_part_are_set_while_it_trains_and_restored_after(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_parts(monkeypatch, "1")
    monkeypatch.setenv("OPTBENCH_TORCH_THREADS", "1")
    get_settings.cache_clear()
    seen: list[int] = []

    class Threads(Hooks):
        def on_run_start(self, run: Any, total_steps: int) -> None:
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert execute_job(stored(SPEC), extra_hooks=(Threads(),)) == "succeeded"
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

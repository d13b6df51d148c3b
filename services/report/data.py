"""The data a page needs, read from the database in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.db import metric_queries, store
from services.db.session import unit_of_work
from services.summary import current_summary


@dataclass(frozen=True)
class RunInfo:
    id: int
    label: str
    optimizer: str
    seed: int
    status: str
    steps_done: int
    total_steps: int | None
    diverged: bool
    diverged_at_step: int | None
    test_loss: float | None
    test_accuracy: float | None
    hyperparameters: dict[str, Any]
    # A tuning study's (services/study/): the run's role, trial number, pruning rung, score.
    role: str = "run"
    trial: int | None = None
    pruned_at_epoch: int | None = None
    selection_score: float | None = None


@dataclass(frozen=True)
class ReportData:
    job_id: str
    name: str
    status: str
    error: str | None
    device: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict[str, Any]
    summary: dict[str, Any]
    runs: list[RunInfo]
    steps: dict[int, dict[str, list[Any]]]
    epochs: dict[int, dict[str, list[Any]]]


def load(job_id: uuid.UUID | str) -> ReportData:
    """Everything the page shows, read in one transaction (NotFound for an unknown job)."""
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        ids = [run.id for run in job.runs]
        summary = current_summary(session, job)
        return ReportData(
            job_id=str(job.id),
            name=job.name,
            status=job.status,
            error=job.error,
            device=job.device,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            spec=dict(job.spec),
            summary=dict(summary),
            runs=[
                RunInfo(
                    run.id,
                    run.label,
                    run.optimizer,
                    run.seed,
                    run.status,
                    run.steps_done,
                    run.total_steps,
                    run.diverged,
                    run.diverged_at_step,
                    run.test_loss,
                    run.test_accuracy,
                    dict(run.hyperparameters or {}),
                    run.role,
                    run.trial,
                    run.pruned_at_epoch,
                    run.selection_score,
                )
                for run in job.runs
            ],
            steps=metric_queries.series(session, ids, "step"),
            epochs=metric_queries.series(session, ids, "epoch"),
        )

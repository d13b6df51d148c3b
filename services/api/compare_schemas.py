"""Response models of ``GET /v1/compare`` and ``GET /v1/optimizers/{label}/history``
(services/comparison.py defines every value), so generated clients get them typed."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from services.api.schemas import OptimizerSummary, TargetOut
from services.spec.data import Task


class ComparedJob(BaseModel):
    """One compared job and its setup (the spec's, defaults filled in)."""

    id: uuid.UUID
    name: str
    status: str
    finished: bool = Field(
        description="false: its cells are the summary so far (ranks provisional)"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    task: Task
    best: str | None = Field(description="its summary's first label of rank 1")
    dataset: dict[str, Any] = Field(description="the spec's data set object")
    model: dict[str, Any] = Field(description="the spec's model object")
    epochs: int
    batch_size: int
    target: TargetOut


class ComparedRow(BaseModel):
    """One optimizer label: one cell per job, in the order of ``jobs``; null where that job
    has no row of the label."""

    label: str
    cells: list[OptimizerSummary | None]


class ComparisonOut(BaseModel):
    jobs: list[ComparedJob]
    differs: list[str] = Field(
        description="the setup keys (dataset, model, epochs, batch_size, target) whose values "
        "are not the same in every job: its numbers are not comparable as they stand"
    )
    rows: list[ComparedRow]


class HistoryItem(BaseModel):
    """The label in one of the caller's succeeded jobs."""

    job_id: uuid.UUID
    job_name: str
    created_at: datetime
    model: dict[str, Any] = Field(description="the spec's model object")
    epochs: int
    target: TargetOut
    task: Task
    hyperparameters: dict[str, Any] | None = Field(
        description="the label's optimizer arguments (a study's: its best trial's, rerun)"
    )
    labels: int = Field(description="ranked rows in its job: the rank is out of these")
    row: OptimizerSummary


class MetricRange(BaseModel):
    """One metric over the jobs that have a value of it."""

    n: int
    median: float | None
    min: float | None
    max: float | None


class HistoryAggregate(BaseModel):
    jobs: int
    ranked_first: int = Field(description="jobs where the label has rank 1")
    ranked: int = Field(
        description="jobs where the label has a rank (a study's one-shot row has none)"
    )
    first_share: float | None = Field(description="ranked_first / ranked")
    mean_success_rate: float | None
    metrics: dict[str, MetricRange] = Field(
        description="best_val_accuracy (R² for regression), final_train_loss, steps_to_target, "
        "seconds_to_target, test_accuracy, final_distance (landscapes)"
    )


class HistoryOut(BaseModel):
    label: str
    dataset: str
    model: str | None
    items: list[HistoryItem] = Field(description="newest first")
    truncated: bool = Field(description="more jobs match than `limit`: the oldest are left out")
    aggregate: HistoryAggregate

"""Response bodies of /v1/suites (requests are the suite spec itself, services/spec/suite.py).

``SuiteScoresOut`` is the scores document services/suite/results.py builds; every time or
ratio that is infinite (a miss) is ``null`` (JSON has no infinity)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from services.db.models import Suite

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class SuiteJobOut(BaseModel):
    workload: str
    study: int
    job_id: uuid.UUID
    status: str


class SuiteOut(BaseModel):
    id: uuid.UUID
    name: str
    status: Status
    created_at: datetime
    finished_at: datetime | None
    spec: dict[str, Any]
    jobs: list[SuiteJobOut] = Field(description="one tuning-study job per workload and study")

    @classmethod
    def of(cls, suite: Suite) -> SuiteOut:
        return cls(
            id=suite.id,
            name=suite.name,
            status=suite.status,
            created_at=suite.created_at,
            finished_at=suite.finished_at,
            spec=suite.spec,
            jobs=[
                SuiteJobOut(
                    workload=job.suite_workload or "",
                    study=job.suite_study or 0,
                    job_id=job.id,
                    status=job.status,
                )
                for job in suite.jobs
            ],
        )


class SuitePage(BaseModel):
    items: list[SuiteOut]
    total: int
    limit: int
    offset: int


class DefinitionOut(BaseModel):
    source: str = Field(description="where the definitions come from, with the version")
    profile: str
    notes: list[str]


class WorkloadJobOut(BaseModel):
    study: int | None
    job_id: uuid.UUID
    status: str


class WorkloadOut(BaseModel):
    name: str
    dataset: str
    model: str
    target: dict[str, Any]
    epochs: int
    budget: float | None = Field(
        description="a trial's full length in steps (the longest of any optimizer's); null "
        "for the seconds measure"
    )
    miss_value: float | None = Field(description="what a miss counts as in the speedup")
    jobs: list[WorkloadJobOut]


class CellOut(BaseModel):
    optimizer: str
    workload: str
    t: float | None = Field(description="median over studies of the fastest trial; null: miss")
    t_per_study: list[float | None]
    r: float | None = Field(description="t / the workload's best t; null: infinite")
    speed_epochs: float | None = Field(
        description="DeepOBS speed: mean first epoch reaching the target over the reruns "
        "that reached it; null: none did"
    )
    speed_reached: int
    speed_reruns: int
    solved_by_anyone: bool


class ProfileOut(BaseModel):
    tau: list[float]
    rho: dict[str, list[float]]


class ScoreRowOut(BaseModel):
    optimizer: str
    rank: int
    score: float = Field(description="B_s: the normalised area under the profile on [1, r_max]")
    geomean_speedup: float | None = Field(
        description="geometric mean of t(s, w) / t(reference, w), misses as budget + 1"
    )
    solved: int
    workloads: int


class SuiteScoresOut(BaseModel):
    suite_id: uuid.UUID
    name: str
    status: Status
    definition: DefinitionOut
    time_measure: Literal["steps", "seconds"]
    r_max: float
    studies: int
    reference: str
    optimizers: list[str]
    workloads: list[WorkloadOut]
    cells: list[CellOut]
    profile: ProfileOut
    table: list[ScoreRowOut]
    speedup_note: str


class SuiteDeleted(BaseModel):
    id: uuid.UUID
    jobs: int
    deleted: dict[str, int] = Field(description="rows of each kind that went with its jobs")

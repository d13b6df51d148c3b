"""Response models of ``GET /v1/jobs/{id}/charts``: the shape services/report/chart_data.py
(and study_data.py for a study) builds, so generated clients get typed chart data too."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

Number = int | float | None
Series = dict[str, list[Number]]  # column → values, one per point


class ChartLabel(BaseModel):
    label: str
    optimizer: str
    seeds: int
    baseline_of: str | None = None  # a study's one-shot label: the tuned label it sits beside


class ChartRun(BaseModel):
    id: str
    label: str
    seed: int
    status: str
    diverged: bool
    role: str = "run"
    trial: int | None = None
    pruned_at_epoch: int | None = None
    selection_score: float | None = None


class ChartTarget(BaseModel):
    metric: str
    column: str
    value: float
    higher_is_better: bool
    text: str


class ChartBar(BaseModel):
    label: str | None
    steps_to_target: float | None = None
    seconds_to_target: float | None = None
    target_reached: str | None = None
    diverged: int | None = None


class ContourLevel(BaseModel):
    value: float
    lines: list[list[list[float]]]  # polylines of [x, y] points


class ChartLandscape(BaseModel):
    name: str
    x_range: list[float]
    y_range: list[float]
    minima: list[list[float]]
    levels: list[ContourLevel]


class StudyProgress(BaseModel):
    budget: int
    trials: int
    done: int
    completed: int
    pruned: int
    diverged: int
    failed: int
    reruns: int
    reruns_done: int


class StudyAxis(BaseModel):
    scale: str  # log, linear or category
    categories: list[Any] | None = None


class StudyTrial(BaseModel):
    run_id: str | int
    trial: int | None
    status: str
    pruned_at_epoch: int | None = None
    score: float | None = None
    values: dict[str, Any]


class StudySearchKey(BaseModel):
    kind: str
    bounds: list[Any]


class StudyEntry(BaseModel):
    label: str
    optimizer: str
    budget: int
    search: dict[str, StudySearchKey]
    trials: list[StudyTrial]
    best_trial: int | None = None
    best_final: bool = False
    expected_best: list[float] | None = None


class ChartStudy(BaseModel):
    sampler: str
    metric: str
    column: str
    higher_is_better: bool
    phase: str
    progress: StudyProgress
    axes: dict[str, StudyAxis]
    entries: list[StudyEntry]
    expected_best_note: str | None = None


class ChartDataOut(BaseModel):
    job_id: str
    status: str
    finished: bool
    task: str
    smoothing: float
    max_points: int
    bucket: int
    labels: list[ChartLabel]
    runs: list[ChartRun]
    steps: dict[str, Series]  # run id → its step series
    epochs: dict[str, Series]  # run id → its epoch series
    target: ChartTarget | None = None
    bars: list[ChartBar]
    landscape: ChartLandscape | None = None
    study: ChartStudy | None = None

"""A job as every export reads it, loaded in one transaction, and what the formats share:
the run columns of the tables, the flattened hyperparameters, and the metric names and
points of the TensorBoard and MLflow exports."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.db import metric_queries, store
from services.db.models import EPOCH_FIELDS, STEP_FIELDS, Job, Run
from services.db.session import unit_of_work
from services.summary import current_summary

RUN_COLUMNS: tuple[str, ...] = (
    "job_id",
    "job_name",
    "dataset",
    "model",
    "run_id",
    "label",
    "optimizer",
    "seed",
    "hyperparameters",
)
# The run's results on the test split (None: not evaluated, e.g. landscapes or a diverged
# run); test_accuracy is R² for regression. Per run, so repeated on each of its rows.
RESULT_COLUMNS: tuple[str, ...] = ("test_loss", "test_accuracy")
KEY_COLUMNS = (*RUN_COLUMNS, *RESULT_COLUMNS, "granularity", "step", "epoch")
VALUE_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(f for f in (*STEP_FIELDS, *EPOCH_FIELDS) if f not in ("step", "epoch"))
)
COLUMNS = KEY_COLUMNS + VALUE_COLUMNS


def clean(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def hyperparameters_json(values: Mapping[str, Any] | None) -> str:
    """The ``hyperparameters`` column: compact JSON, sorted keys (non-finite numbers null)."""
    return json.dumps(
        clean(dict(values or {})), sort_keys=True, separators=(",", ":"), allow_nan=False
    )


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as flat scalars: ``{"betas": [0.9, 0.999]}`` gives
    ``{"betas.0": 0.9, "betas.1": 0.999}`` (trackers take scalar parameters only)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat.update(flatten({str(i): v for i, v in enumerate(value)}, f"{name}."))
        else:
            flat[name] = value
    return flat


def _spec_name(spec: Mapping[str, Any], part: str) -> str | None:
    value = spec.get(part)
    name = value.get("name") if isinstance(value, Mapping) else None
    return name if isinstance(name, str) else None


def run_columns(job: Job, runs: Iterable[Run]) -> dict[int, tuple[Any, ...]]:
    """Per run id, its ``RUN_COLUMNS`` values (the export's and the metrics CSV's)."""
    spec = job.spec or {}
    head = (str(job.id), job.name or None, _spec_name(spec, "dataset"), _spec_name(spec, "model"))
    return {
        run.id: (
            *head,
            run.id,
            run.label,
            run.optimizer,
            run.seed,
            hyperparameters_json(run.hyperparameters),
        )
        for run in runs
    }


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class ExportRun:
    id: int
    label: str
    optimizer: str
    seed: int
    status: str
    hyperparameters: dict[str, Any]
    test_loss: float | None
    test_accuracy: float | None
    started_at: datetime | None
    finished_at: datetime | None
    columns: tuple[Any, ...]  # its RUN_COLUMNS values

    @property
    def results(self) -> tuple[float | None, float | None]:
        """Its ``RESULT_COLUMNS`` values."""
        return self.test_loss, self.test_accuracy


@dataclass(frozen=True)
class ExportJob:
    id: str
    name: str
    status: str
    device: str | None
    created_at: datetime
    started_at: datetime | None
    spec: dict[str, Any]
    summary: dict[str, Any]
    runs: list[ExportRun]
    series: dict[str, dict[int, dict[str, list[Any]]]]  # granularity → run id → columns

    @property
    def dataset(self) -> str | None:
        return _spec_name(self.spec, "dataset")

    @property
    def model(self) -> str | None:
        return _spec_name(self.spec, "model")


def load(job_id: uuid.UUID | str, granularities: tuple[str, ...]) -> ExportJob:
    """The job, its runs and their series (raises ``NotFound``)."""
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        ids = [run.id for run in job.runs]
        about = run_columns(job, job.runs)
        return ExportJob(
            id=str(job.id),
            name=job.name,
            status=job.status,
            device=job.device,
            created_at=job.created_at,
            started_at=job.started_at,
            spec=dict(job.spec),
            summary=dict(current_summary(session, job)),
            runs=[
                ExportRun(
                    id=run.id,
                    label=run.label,
                    optimizer=run.optimizer,
                    seed=run.seed,
                    status=run.status,
                    hyperparameters=dict(run.hyperparameters or {}),
                    test_loss=_finite(run.test_loss),
                    test_accuracy=_finite(run.test_accuracy),
                    started_at=run.started_at,
                    finished_at=run.finished_at,
                    columns=about[run.id],
                )
                for run in job.runs
            ],
            series={g: metric_queries.series(session, ids, g) for g in granularities},
        )


# ---------------------------------------------------------------- tracker metrics
#
# TensorBoard and MLflow get the same names: a step field ``f`` is ``train/f`` (what the
# batch measured), except the mid-epoch validation points (``val/loss``, ``val/accuracy``)
# and the training clock (``train/seconds``); an epoch field is ``epoch/f``; the run's test
# results are ``test/loss`` and ``test/accuracy``, at the run's last global step.
STEP_NAMES = {
    "train_seconds": "train/seconds",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
}
TEST_NAMES = {"test_loss": "test/loss", "test_accuracy": "test/accuracy"}


def metric_name(granularity: str, field: str) -> str:
    if granularity == "epoch":
        return f"epoch/{field}"
    return STEP_NAMES.get(field, f"train/{field}")


@dataclass
class Point:
    """The values a run recorded at one global step, and its training seconds by then."""

    step: int
    seconds: float | None
    values: dict[str, float]


def points(job: ExportJob, run: ExportRun) -> list[Point]:
    """The run's step and epoch values merged by global step, in step order, then its test
    results at the last step. Missing and non-finite values are left out; a point whose
    training seconds are unknown gets the previous point's (0 before the first)."""
    by_step: dict[int, Point] = {}
    for granularity in ("step", "epoch"):  # a step's own seconds win over its epoch's
        columns = job.series.get(granularity, {}).get(run.id) or {}
        fields = [f for f in columns if f not in ("step", "epoch")]
        steps = columns.get("step", [])
        seconds = columns.get("train_seconds") or [None] * len(steps)
        for index, step in enumerate(steps):
            point = by_step.setdefault(int(step), Point(int(step), None, {}))
            if point.seconds is None:
                point.seconds = _finite(seconds[index])
            for field in fields:
                value = _finite(columns[field][index])
                if value is not None:
                    point.values[metric_name(granularity, field)] = value
    ordered = [by_step[step] for step in sorted(by_step)]
    tests = {
        TEST_NAMES[name]: value
        for name, value in zip(RESULT_COLUMNS, run.results, strict=True)
        if value is not None
    }
    if tests:
        if not ordered:
            ordered.append(Point(0, None, {}))
        ordered[-1].values.update(tests)
    clock = 0.0
    for point in ordered:
        if point.seconds is None:
            point.seconds = clock
        clock = point.seconds
    return [point for point in ordered if point.values]


def start_time(job: ExportJob, run: ExportRun) -> float:
    """When the run started training (POSIX seconds): the run's start, else the job's, else
    when the job was submitted. Wall times are this plus the stored training seconds."""
    moment = run.started_at or job.started_at or job.created_at
    return moment.timestamp()

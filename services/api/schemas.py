"""Response bodies of the HTTP API (requests are the job spec itself, services/spec)."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from services.db import store
from services.db.models import FINISHED, Job, Run
from services.spec.data import Task
from services.spec.job import TargetMetric

# The largest offset or step a query may name: PostgreSQL's INTEGER (steps are stored as
# one); a larger number would make the database refuse the query (a 500), not find nothing.
MAX_QUERY_INT = 2**31 - 1


class RunOut(BaseModel):
    id: int
    label: str
    optimizer: str
    hyperparameters: dict[str, Any]
    seed: int
    status: str
    steps_done: int
    total_steps: int | None
    diverged: bool
    error: str | None
    fused: bool | None = None  # known once the run has ended
    fusion: str | None = None  # "fused with N runs", or why it trained alone
    device: str | None = None  # where it trains or trained: "cuda:1" (a worker's GPU), "cpu"

    @classmethod
    def of(cls, run: Run) -> RunOut:
        return cls.model_validate(run, from_attributes=True)


class ProgressOut(BaseModel):
    steps_done: int
    total_steps: int | None
    fraction: float | None


class JobTimings(BaseModel):
    """Where the job's time went, as its workers measured it (null fields: not yet, or not
    for this job). ``seconds``: the spans between the job's moments in order, from
    ``created_at`` to ``finished_at``: ``queued``, ``loading`` (its data), ``starting``
    (parts sent, runs claimed, models built), ``training`` (first to last step, the
    evaluations between epochs included), ``storing`` (the last rows and the test split)
    and ``finishing`` (summary and status). ``step_seconds``: the time spent in training
    steps alone, of the part that spent most."""

    picked_up_at: datetime | None = None
    data_ready_at: datetime | None = None
    first_step_at: datetime | None = None
    last_step_at: datetime | None = None
    rows_committed_at: datetime | None = None
    step_seconds: float | None = None
    seconds: dict[str, float]

    @classmethod
    def of(cls, job: Job) -> JobTimings | None:
        if not isinstance(job.timings, dict):
            return None
        stored = job.timings
        moments = {
            key: datetime.fromisoformat(stored[key])
            for key in _TIMING_MOMENTS
            if isinstance(stored.get(key), str)
        }
        known: dict[str, datetime | None] = {
            "created_at": job.created_at,
            **moments,
            "finished_at": job.finished_at,
        }
        order = ("created_at", *_TIMING_MOMENTS, "finished_at")
        seconds = {  # only between two moments both known
            _SPAN_NAMES[end]: max((at - began).total_seconds(), 0.0)
            for start, end in itertools.pairwise(order)
            if (began := known.get(start)) is not None and (at := known.get(end)) is not None
        }
        step_seconds = stored.get("step_seconds")
        return cls(
            **moments,
            step_seconds=float(step_seconds) if isinstance(step_seconds, int | float) else None,
            seconds=seconds,
        )


_TIMING_MOMENTS = (
    "picked_up_at",
    "data_ready_at",
    "first_step_at",
    "last_step_at",
    "rows_committed_at",
)
_SPAN_NAMES = {  # a span is named by the moment that ends it
    "picked_up_at": "queued",
    "data_ready_at": "loading",
    "first_step_at": "starting",
    "last_step_at": "training",
    "rows_committed_at": "storing",
    "finished_at": "finishing",
}


class JobOut(BaseModel):
    id: uuid.UUID
    name: str
    status: str
    error: str | None
    device: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: ProgressOut
    runs: list[RunOut]
    spec: dict[str, Any]
    # The rank-1 label of the summary stored when the job finished (null before, and for a
    # job that ended without one): read from the job row, no query per listed job.
    best_label: str | None = None
    # The suite the job is a study of (services/suite/), with its workload and study number.
    suite_id: uuid.UUID | None = None
    suite_workload: str | None = None
    suite_study: int | None = None
    timings: JobTimings | None = None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        progress = store.progress(job)
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            error=job.error,
            device=job.device,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            progress=ProgressOut(
                steps_done=progress.steps_done,
                total_steps=progress.total_steps,
                fraction=progress.fraction,
            ),
            runs=[RunOut.of(run) for run in job.runs],
            spec=job.spec,
            best_label=_best_label(job),
            suite_id=job.suite_id,
            suite_workload=job.suite_workload,
            suite_study=job.suite_study,
            timings=JobTimings.of(job),
        )


def _best_label(job: Job) -> str | None:
    if job.status not in FINISHED or not isinstance(job.summary, dict):
        return None
    best = job.summary.get("best")
    return best if isinstance(best, str) else None


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class RunSeries(BaseModel):
    run_id: int
    label: str
    optimizer: str
    seed: int
    series: dict[str, list[Any]]


class MetricsOut(BaseModel):
    job_id: uuid.UUID
    granularity: str
    runs: list[RunSeries]


# --- GET /v1/jobs/{id}/summary (services/summary.py: its docstring defines each value) ---


class TargetOut(BaseModel):
    metric: TargetMetric
    value: float


class StatOut(BaseModel):
    """One metric over the seeds of a label (diverged runs excluded; the to-target metrics
    over the reached runs only)."""

    mean: float | None
    std: float | None  # the sample standard deviation: None below two values
    median: float | None
    n: int


class PairedOut(BaseModel):
    """This label minus ``reference`` on the final target metric, seed by seed."""

    reference: str
    metric: TargetMetric
    n: int
    seeds: list[int]
    differences: list[float]
    mean: float
    ci95: list[float]  # [low, high]: the 95 % t-interval of the mean


class OptimizerSummary(BaseModel):
    """One optimizer label (a row of the spec's ``optimizers``) over its seeds: the means of
    the value metrics, the medians of the to-target ones (None: no run has a value). Fields
    added after the first summaries were stored have defaults, so an older job's stored
    summary still validates."""

    label: str
    optimizer: str
    runs: int
    final_train_loss: float | None = None
    best_train_loss: float | None = None
    final_val_accuracy: float | None = None  # R² for regression; None for landscapes
    best_val_accuracy: float | None = None
    final_distance: float | None = None  # landscapes
    final_target: float | None = None
    auc_train_loss: float | None = None
    steps_to_target: float | None = None
    epochs_to_target: float | None = None
    seconds_to_target: float | None = None
    # On the test split, once after the last epoch (R² for regression); None where no run of
    # the label was evaluated on one (landscapes) and in summaries stored before them.
    test_loss: float | None = None
    test_accuracy: float | None = None
    target_reached: str  # "k/n"
    success_rate: float | None = None
    diverged: int
    stats: dict[str, StatOut] = {}
    rank: int | None  # None: a study's one-shot row (its baseline is not ranked)
    paired: PairedOut | None = None
    # A tuning study's rows (services/study/results.py): "tuned" (over the best setting's
    # reruns) or "one-shot" (the entry's given values on the same seeds); None in a plain job.
    role: Literal["tuned", "one-shot"] | None = None


class BestSettingOut(BaseModel):
    """An entry's best trial: what the sampler chose, the full setting, its score."""

    trial: int
    run_id: int
    values: dict[str, Any]  # searched key (lr, betas.0, schedule.warmup_steps) -> value
    hyperparameters: dict[str, Any]
    selection_score: float | None


class StudyEntryOut(BaseModel):
    """One optimizer entry's search (counts by trial status; steps trained against the
    steps the full sweep, every trial to the last epoch, would cost)."""

    label: str
    optimizer: str
    searched: bool  # False: one trial at its given values
    budget: int
    trials: int  # drawn so far
    completed: int
    pruned: int
    diverged: int
    unfinished: int  # queued or running
    failed: int  # failed or cancelled
    steps_trained: int
    full_sweep_steps: int | None  # None until the trials' steps are known (job started)
    best: BestSettingOut | None
    # E[best selection score of k trials], k = 1..N over the completed trials; None for
    # grid and tpe samplers (StudyOut.expected_best_note says why) and unsearched entries.
    expected_best_of_k: list[float] | None


class StudyOut(BaseModel):
    """A tuning study so far (services/study/results.py defines every value)."""

    sampler: Literal["grid", "random", "quasirandom", "tpe"]
    selection_metric: str
    higher_is_better: bool
    phase: Literal["search", "reruns", "complete"]
    rerun_seeds: list[int]
    pruning: dict[str, Any] | None
    budget_note: str | None  # set when the entries' trial budgets differ
    expected_best_note: str | None  # why expected_best_of_k is not shown (grid, tpe)
    steps_trained: int
    full_sweep_steps: int | None
    entries: list[StudyEntryOut]


class SummaryOut(BaseModel):
    task: Task
    target: TargetOut
    best: str | None  # the first label of rank 1
    optimizers: list[OptimizerSummary]
    study: StudyOut | None = None  # a tuning study's; None for a plain job and old summaries


# --- GET /v1/jobs/{id}/trials (services/study/results.py) ---


class TrialOut(BaseModel):
    run_id: int
    label: str
    optimizer: str
    trial: int  # the trial's number within its label
    seed: int
    status: Literal["completed", "pruned", "diverged", "running", "queued", "failed", "cancelled"]
    values: dict[str, Any]  # the sampled values of the entry's searched keys
    hyperparameters: dict[str, Any]
    selection_score: float | None  # so far, while it trains
    rung: int | None  # the epoch whose rung pruned it
    steps_trained: int
    total_steps: int | None  # a full trial's steps


class TrialPage(BaseModel):
    job_id: uuid.UUID
    selection_metric: str
    higher_is_better: bool
    sampler: Literal["grid", "random", "quasirandom", "tpe"] | None  # None: not a study
    searched: dict[str, list[str]]  # label -> its searched keys
    items: list[TrialOut]
    total: int
    limit: int | None
    offset: int


# --- GET /v1/catalog (services/catalog.py) ---


class CatalogEntry(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]  # parameter name -> its JSON schema (type, default, bounds)


class CatalogDataset(CatalogEntry):
    task: Task


class CatalogOptimizer(CatalogEntry):
    torch_class: str
    full_batch: bool
    fixed: dict[str, Any]


class CatalogModel(CatalogEntry):
    # The parameters the default spec (named_parameters_of) builds, with their roles: what
    # an optimizer entry's parameter groups select (services/spec/groups.py).
    named_parameters_of: dict[str, Any]
    named_parameters: list[dict[str, Any]]  # {"name": "1.weight", "role": "input", "ndim": 2}


class CatalogParameterGroups(BaseModel):
    selectors: str
    roles: dict[str, str]  # role -> which parameters have it
    example: dict[str, Any]  # an optimizer entry with groups


class CatalogPluginOptimizer(CatalogEntry):
    """An installed package's optimizer that a live worker can train: name it in a job as
    its ``name`` ("<source>:<Name>", case-insensitive)."""

    source: str
    package: str  # the distribution that installed it
    version: str
    python_class: str
    modes: bool  # train/eval modes (schedule-free): evaluated with its eval() weights
    refused: str | None  # why a job cannot train it, or null
    workers: int  # how many live workers have it
    bounds_from: dict[str, Literal["name", "none"]]  # per parameter: the name's usual range


class CatalogOut(BaseModel):
    datasets: list[CatalogDataset]
    models: list[CatalogModel]
    optimizers: list[CatalogOptimizer]
    schedules: list[CatalogEntry]
    refused_optimizers: dict[str, str]  # torch.optim class -> why a job cannot name it
    parameter_groups: CatalogParameterGroups
    plugin_optimizers: list[CatalogPluginOptimizer]  # installed packages' (live workers')


# --- GET /healthz, /readyz (services/api/routes/system.py) ---


class HealthOut(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"]


class ReadinessOut(BaseModel):
    """Readiness: the database answers (otherwise a 503 problem+json, not this)."""

    status: Literal["ready"]

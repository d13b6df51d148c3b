"""Run one stored job: load it, train it through the engine, store metrics and outcome.

Shared by the Celery task (workers/tasks.py) and ``optbench run`` (in-process), so both
behave the same. Status moves ``queued → running → succeeded | failed``; a failure stores a
readable error on the job and its unfinished runs.
"""

from __future__ import annotations

import logging
import uuid

import torch

from services.db import store
from services.db.models import FINISHED, Job
from services.db.session import unit_of_work
from services.spec import CATALOG, JobSpec
from services.summary import job_summary
from services.telemetry import JOBS_FINISHED
from workers.engine import (
    DatasetConfig,
    Experiment,
    Hooks,
    JobConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
)
from workers.engine.hooks import CompositeHooks
from workers.sinks.prometheus import PrometheusSink
from workers.sinks.sql import SqlSink

log = logging.getLogger(__name__)


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def job_config(job: Job, device: str, flush_every: int) -> JobConfig:
    """Translate the stored spec and runs into the engine's frozen configuration."""
    spec = JobSpec.model_validate(job.spec)
    dataset = spec.dataset.model_dump(exclude={"name", "val_fraction", "seed"})
    model = spec.model.model_dump(exclude={"name"})
    runs = tuple(
        RunConfig(
            key=run.id,
            seed=run.seed,
            optimizer=OptimizerConfig(
                label=run.label,
                name=run.optimizer,
                torch_class=CATALOG[run.optimizer].torch_class,
                hyperparameters=dict(run.hyperparameters),
                full_batch=CATALOG[run.optimizer].full_batch,
            ),
        )
        for run in job.runs
    )
    return JobConfig(
        dataset=DatasetConfig(
            spec.dataset.name, dataset, spec.dataset.val_fraction, spec.dataset.seed
        ),
        model=ModelConfig(spec.model.name, model),
        runs=runs,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        flush_every=flush_every,
        device=device,
    )


def execute_job(
    job_id: uuid.UUID | str, *, flush_every: int = 100, extra_hooks: tuple[Hooks, ...] = ()
) -> str:
    """Train the job to its end; returns its final status. Safe to call twice (idempotent)."""
    device = pick_device()
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        if job.status in FINISHED:
            log.info("job %s is already %s; nothing to do", job.id, job.status)
            return job.status
        config = job_config(job, device, flush_every)
        job_key = job.id
    try:
        experiment = Experiment(config)
        with unit_of_work() as session:
            job = store.get_job(session, job_key)
            store.start_job(
                session, job, {r.key: experiment.total_steps(r) for r in config.runs}, device
            )
        hooks = CompositeHooks(SqlSink(), PrometheusSink(config.dataset.name, device), *extra_hooks)
        experiment.run_all(hooks)
        with unit_of_work() as session:
            job = store.get_job(session, job_key)
            summary = job_summary(session, job)
            store.finish_job(session, job_key, summary=summary)
    except Exception as error:  # the job fails; the worker goes on with the next one
        log.exception("job %s failed", job_key)
        with unit_of_work() as session:
            store.finish_job(session, job_key, error=f"{type(error).__name__}: {error}")
        JOBS_FINISHED.labels("failed").inc()
        return "failed"
    JOBS_FINISHED.labels("succeeded").inc()
    return "succeeded"

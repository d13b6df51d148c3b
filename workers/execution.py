"""Run one stored job: load it, train it through the engine, store metrics and outcome.

Shared by the Celery task (workers/tasks.py) and ``optbench run`` (in-process), so both
behave the same. Status moves ``queued → running → succeeded | failed``; a failure stores a
readable error on the job and its unfinished runs.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import torch
from sqlalchemy.orm import Session

from services import uploads
from services.db import store
from services.db.models import FINISHED, Job
from services.db.session import unit_of_work
from services.settings import Settings, get_settings
from services.spec import CATALOG, JobSpec, OptimizerEntry
from services.summary import job_summary
from services.telemetry import JOB_DURATION_SECONDS, JOBS_FINISHED, QUEUE_WAIT_SECONDS
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


def pick_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("OPTBENCH_DEVICE=cuda but this worker sees no CUDA device")
    return setting


_SPLIT_KEYS = {"name", "val_fraction", "test_fraction", "seed"}
FILE_DATASETS = frozenset({"mnist", "fashion_mnist", "cifar10"})


def dataset_config(session: Session, spec: JobSpec, settings: Settings) -> DatasetConfig:
    """The engine's view of the data set: parameters only, files and uploads resolved here."""
    data = spec.dataset
    params = data.model_dump(exclude=_SPLIT_KEYS, mode="json")
    if data.name in FILE_DATASETS:  # type: ignore[attr-defined]
        params["folder"] = str(settings.resolved_data_dir)
    if data.name == "upload":  # type: ignore[attr-defined]
        params = {"npz": uploads.load_dataset_bytes(session, params.pop("id"))}
    return DatasetConfig(
        name=data.name,  # type: ignore[attr-defined]
        params=params,
        val_fraction=getattr(data, "val_fraction", 0.0),
        test_fraction=getattr(data, "test_fraction", 0.0),
        seed=getattr(data, "seed", 0),
    )


def job_config(session: Session, job: Job, device: str, settings: Settings) -> JobConfig:
    """Translate the stored spec and runs into the engine's frozen configuration."""
    spec = JobSpec.model_validate(job.spec)
    entries = {entry.display_label: entry for entry in spec.optimizers}
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
                schedule=_schedule(entries[run.label]),
            ),
        )
        for run in job.runs
    )
    return JobConfig(
        dataset=dataset_config(session, spec, settings),
        model=ModelConfig(spec.model.name, spec.model.model_dump(exclude={"name"})),
        runs=runs,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        flush_every=settings.flush_every_steps,
        device=device,
        eval_every_steps=spec.eval_every_steps,
        divergence_ratio=spec.divergence_ratio,
        mixed_precision=spec.mixed_precision,
        fuse="auto" if spec.execution.fuse else "never",
        dtype=spec.execution.dtype,
    )


def _schedule(entry: OptimizerEntry) -> dict[str, Any] | None:
    return entry.schedule.model_dump() if entry.schedule else None


def execute_job(job_id: uuid.UUID | str, *, extra_hooks: tuple[Hooks, ...] = ()) -> str:
    """Train the job to its end; returns its final status. Safe to call twice (idempotent)."""
    settings = get_settings()
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        if job.status in FINISHED:
            log.info("job %s is already %s; nothing to do", job.id, job.status)
            return job.status
        job_key, created_at = job.id, job.created_at
    started = time.monotonic()
    try:
        device = pick_device(settings.device)
        with unit_of_work() as session:
            job = store.get_job(session, job_key)
            config = job_config(session, job, device, settings)
            target = JobSpec.model_validate(job.spec).effective_target
        experiment = Experiment(config)
        with unit_of_work() as session:
            job = store.get_job(session, job_key)
            store.start_job(
                session, job, {r.key: experiment.total_steps(r) for r in config.runs}, device
            )
            QUEUE_WAIT_SECONDS.observe(_seconds_since(created_at))
        metrics = PrometheusSink(
            config.dataset.name, config.model.name, device, target.column, target.reached
        )
        experiment.run_all(CompositeHooks(SqlSink(), metrics, *extra_hooks))
        with unit_of_work() as session:
            job = store.get_job(session, job_key)
            store.finish_job(session, job_key, summary=job_summary(session, job))
        status = "succeeded"
    except Exception as error:  # the job fails; the worker goes on with the next one
        log.exception("job %s failed", job_key)
        with unit_of_work() as session:
            store.finish_job(session, job_key, error=f"{type(error).__name__}: {error}")
        status = "failed"
    JOBS_FINISHED.labels(status).inc()
    JOB_DURATION_SECONDS.labels(status).observe(time.monotonic() - started)
    return status


def _seconds_since(moment: datetime) -> float:
    return max((datetime.now(UTC) - moment).total_seconds(), 0.0)

"""Celery tasks: thin. Take an id, hand it to the use case, nothing else."""

from __future__ import annotations

from services.queue import RUN_JOB_TASK
from workers.celery_app import app
from workers.execution import execute_job


@app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> str:
    return execute_job(job_id)

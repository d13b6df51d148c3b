"""Celery tasks: thin. Take an id, hand it to the use case, nothing else."""

from __future__ import annotations

from celery import Task

from services.queue import RUN_JOB_TASK
from services.telemetry import TASK_REDELIVERIES
from workers.celery_app import app
from workers.execution import execute_job


@app.task(name=RUN_JOB_TASK, bind=True)
def run_job(self: Task, job_id: str) -> str:
    if (self.request.delivery_info or {}).get("redelivered"):
        TASK_REDELIVERIES.inc()
    return execute_job(job_id)

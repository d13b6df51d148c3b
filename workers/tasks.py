"""Celery tasks: thin. Take ids, hand them to the use case, nothing else.

``run_job`` plans a job and trains its first part; ``run_job_part`` trains one of the other
parts (workers/execution.py, workers/parts.py). Arguments are JSON: ids and numbers.
"""

from __future__ import annotations

from celery import Task

from services.queue import RUN_JOB_PART_TASK, RUN_JOB_TASK, enqueue_part
from services.telemetry import TASK_REDELIVERIES
from workers.celery_app import app
from workers.execution import execute_job, execute_part


def _count_redelivery(task: Task) -> None:
    if (task.request.delivery_info or {}).get("redelivered"):
        TASK_REDELIVERIES.inc()


@app.task(name=RUN_JOB_TASK, bind=True)
def run_job(self: Task, job_id: str) -> str:
    _count_redelivery(self)
    return execute_job(job_id, send_part=enqueue_part)


@app.task(name=RUN_JOB_PART_TASK, bind=True)
def run_job_part(
    self: Task, job_id: str, run_ids: list[int], threads: int, part: int = 0, parts: int = 0
) -> str:
    _count_redelivery(self)
    return execute_part(job_id, run_ids, threads, part=part, parts=parts, send_part=enqueue_part)

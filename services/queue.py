"""The job queue: Celery configuration shared by the API (which only sends) and the workers.

The API sends tasks by name, so it never imports the worker code (or torch).
Broker: Redis or RabbitMQ in a cluster; Kombu's ``filesystem://`` transport for the
embedded default (messages are files under ``OPTBENCH_HOME/broker``; no server).

Each task is sent with its owner's rank as the message's priority (services/fairness.py):
Redis keeps a list per rank (``priority_steps`` 0-9, lower first); RabbitMQ declares the
queue with ``x-max-priority`` and takes higher first, so there the priority is
``MAX_RANK - rank`` (a queue declared before without it must be deleted once: RabbitMQ
refuses to redeclare a queue with other arguments). The filesystem transport has no
priorities: first in, first out.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from celery import Celery

from services.fairness import MAX_RANK, task_rank
from services.settings import Settings, get_settings

RUN_JOB_TASK = "optbench.run_job"
RUN_JOB_PART_TASK = "optbench.run_job_part"
QUEUE = "optbench"
# Longer than any job may run: Redis redelivers an unacknowledged task after this long.
VISIBILITY_TIMEOUT_SECONDS = 7 * 24 * 3600
FILESYSTEM_POLLING_SECONDS = 0.1  # how often a worker on the embedded default looks for tasks


def celery_config(settings: Settings) -> dict[str, Any]:
    transport_options: dict[str, Any] = {}
    if settings.broker_url.startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options = {
            # One folder both ways: producers write where consumers read.
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # Kombu looks for new files once a second by default: a second of every small
            # job's time (the demo's) spent waiting in the queue. A listing of one folder
            # ten times a second costs an idle worker nothing measurable.
            "polling_interval": FILESYSTEM_POLLING_SECONDS,
        }
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        transport_options = {
            "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
            # One list per rank (Kombu's default merges them into 0, 3, 6, 9).
            "priority_steps": list(range(MAX_RANK + 1)),
        }
    amqp = settings.broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": QUEUE,
        # JSON only: a pickle payload from the broker would be code execution.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        # Tasks are idempotent (metric writes ignore duplicates), so a task is acknowledged
        # only when it has finished and is redelivered if its worker dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A broker that goes away for a moment (Redis restarted) must not stop the training
        # in progress: the task goes on while the worker reconnects (broker_connection_retry,
        # Celery's default) and acknowledges its message afterwards. Celery 5 does so by
        # default; Celery 6 is to cancel such tasks instead (tests/integration/
        # test_faults_infra.py restarts Redis in the middle of a job).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        **({"task_queue_max_priority": MAX_RANK} if amqp else {}),
    }


def priority(rank: int, broker_url: str) -> int:
    """The message priority of a task of this rank on this broker (see the module)."""
    rank = max(0, min(rank, MAX_RANK))
    if broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
        return MAX_RANK - rank
    return rank


@lru_cache(maxsize=1)
def _client() -> Celery:
    app = Celery("optbench-client")
    app.conf.update(celery_config(get_settings()))
    return app


def enqueue_job(job_id: uuid.UUID) -> None:
    """Send the job to the workers, at its owner's rank. Call only after the job's
    transaction has committed."""
    _client().send_task(
        RUN_JOB_TASK, args=[str(job_id)], queue=QUEUE, priority=_priority(job_id, part=1)
    )


def enqueue_part(job_id: str, run_ids: list[int], threads: int, part: int, parts: int) -> None:
    """Send one part of a running job (workers/parts.py): its run ids and torch threads, at
    its owner's rank (part k of a job ranks k - 1 behind the job's planning task)."""
    _client().send_task(
        RUN_JOB_PART_TASK,
        kwargs={
            "job_id": job_id,
            "run_ids": [int(run_id) for run_id in run_ids],
            "threads": int(threads),
            "part": int(part),
            "parts": int(parts),
        },
        queue=QUEUE,
        priority=_priority(job_id, part=int(part)),
    )


def _priority(job_id: uuid.UUID | str, part: int) -> int | None:
    """None (no lookup) on the filesystem broker, which has no priorities."""
    url = get_settings().broker_url
    return None if url.startswith("filesystem://") else priority(task_rank(job_id, part), url)


# Kombu's Redis transport: a list per queue (and per priority step above 0) holds waiting
# messages; a hash holds those delivered to a worker and not yet acknowledged (acks_late:
# until the task ends, or its worker's death puts them back).
_REDIS_PRIORITY_SEP = "\x06\x16"
_REDIS_PRIORITY_STEPS = tuple(range(1, MAX_RANK + 1))
_REDIS_UNACKED = "unacked"


def jobs_in_broker() -> set[str] | None:
    """Ids of the jobs whose ``run_job`` task the broker holds (waiting, or delivered and not
    yet acknowledged), or None when this broker cannot tell (only Redis can: the filesystem
    transport forgets a message once a worker reads it)."""
    settings = get_settings()
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        return None
    waiting, unacked = _redis_messages(settings.broker_url)
    messages = waiting + [_first(raw) for raw in unacked]
    return set(_job_ids(messages))


def _first(raw: bytes) -> bytes:
    """An unacked entry is ``[message, exchange, routing_key]``: the message."""
    return json.dumps(json.loads(raw)[0]).encode()


def _job_ids(messages: Iterable[bytes]) -> Iterable[str]:
    for raw in messages:
        try:
            message = json.loads(raw)
            if message.get("headers", {}).get("task") != RUN_JOB_TASK:
                continue
            body = message["body"]
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = json.loads(body)[0]
            yield str(args[0])
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # not a message of ours


@dataclass(frozen=True)
class RunsInBroker:
    """What a Redis broker holds of running jobs' work: the run ids of ``run_job_part``
    messages waiting in the queue and of those delivered to a worker and not yet
    acknowledged, and the ids of the jobs whose ``run_job`` (planning) message is waiting."""

    waiting: frozenset[int] = frozenset()
    unacked: frozenset[int] = frozenset()
    planning: frozenset[str] = frozenset()

    @property
    def held(self) -> frozenset[int]:
        return self.waiting | self.unacked


def runs_in_broker() -> RunsInBroker | None:
    """The run ids of the ``run_job_part`` messages the broker holds, waiting or delivered
    and not yet acknowledged (and the jobs whose ``run_job`` message waits), or None when
    this broker cannot tell (only Redis can, as for ``jobs_in_broker``)."""
    settings = get_settings()
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        return None
    waiting, entries = _redis_messages(settings.broker_url)
    unacked = []
    for raw in entries:
        try:
            unacked.append(_first(raw))
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # not an entry of ours
    return RunsInBroker(
        waiting=frozenset(_part_run_ids(waiting)),
        unacked=frozenset(_part_run_ids(unacked)),
        planning=frozenset(_job_ids(waiting)),
    )


def _redis_messages(url: str) -> tuple[list[bytes], list[bytes]]:
    """The messages waiting in the queue (every priority step) and the unacked entries,
    read in one transaction."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        queues = [QUEUE, *(f"{QUEUE}{_REDIS_PRIORITY_SEP}{step}" for step in _REDIS_PRIORITY_STEPS)]
        pipe = client.pipeline(transaction=True)
        for queue in queues:
            pipe.lrange(queue, 0, -1)
        pipe.hvals(_REDIS_UNACKED)
        *waiting, unacked = pipe.execute()
    finally:
        client.close()
    return [raw for items in waiting for raw in items], list(unacked)


def _part_run_ids(messages: Iterable[bytes]) -> Iterable[int]:
    """The run ids of the ``run_job_part`` messages among ``messages`` (keyword or
    positional arguments: job id, run ids, threads, ...)."""
    for raw in messages:
        try:
            message = json.loads(raw)
            if message.get("headers", {}).get("task") != RUN_JOB_PART_TASK:
                continue
            body = message["body"]
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args, kwargs = json.loads(body)[:2]
            run_ids = kwargs["run_ids"] if "run_ids" in kwargs else args[1]
            yield from (int(run_id) for run_id in run_ids)
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # not a message of ours


def reset_client() -> None:
    _client.cache_clear()

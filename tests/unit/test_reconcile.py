"""Nothing lost at submission: a job stored while the broker is down is sent once it is back
(services/reconcile.py), with a real Redis broker where one is reachable."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from services import jobs
from services.db import store
from services.db.models import Job, utcnow
from services.db.session import unit_of_work
from services.queue import QUEUE, jobs_in_broker, reset_client
from services.reconcile import reconcile
from services.settings import get_settings
from services.spec import JobSpec
from tests.support import require_port

SPEC = JobSpec.model_validate(
    {
        "name": "reconciled",
        "dataset": {"name": "iris"},
        "model": {"name": "linear"},
        "optimizers": [{"name": "sgd", "lr": 0.1}],
        "epochs": 1,
    }
)
GRACE = get_settings().reconcile_grace_seconds
# A database of its own (the integration tests' cluster empties db 15).
REDIS_URL = os.environ.get("OPTBENCH_TEST_REDIS_RECONCILE", "redis://127.0.0.1:6379/14")


def broker_down(_: uuid.UUID) -> None:
    raise ConnectionRefusedError("the broker is down")


def stored(job_id: uuid.UUID) -> Job:
    with unit_of_work() as session:
        return store.get_job(session, job_id, with_runs=False)


def test_a_job_stored_while_the_broker_is_down_is_sent_once_it_is_back(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "services.jobs"):
        submitted = jobs.submit(SPEC, broker_down)
    assert submitted.created and submitted.job.status == "queued"
    assert "not enqueued" in caplog.text and "reconciler" in caplog.text
    job = stored(submitted.job.id)
    assert job.enqueued_at is None and job.enqueue_attempts == 1

    still_down = reconcile(send=broker_down, held=lambda: set())
    assert still_down.broker_down and still_down.sent == []
    assert stored(job.id).enqueued_at is None and stored(job.id).enqueue_attempts == 2

    sent: list[uuid.UUID] = []
    now = utcnow()
    assert reconcile(now, send=sent.append, held=lambda: set()).sent == [job.id]
    assert stored(job.id).enqueued_at == now and stored(job.id).enqueue_attempts == 3
    # Sent now: the next pass leaves it alone, broker or no broker.
    assert reconcile(now, send=sent.append, held=lambda: set()).sent == []
    assert sent == [job.id]


def test_a_sent_job_is_sent_again_only_when_its_message_is_lost(database: str) -> None:
    job = jobs.submit(SPEC, lambda _: None).job
    sent: list[uuid.UUID] = []
    later = utcnow() + timedelta(seconds=GRACE + 1)
    soon = utcnow() + timedelta(seconds=GRACE / 2)
    assert reconcile(soon, send=sent.append, held=lambda: set()).sent == []  # within grace
    assert reconcile(later, send=sent.append, held=lambda: {str(job.id)}).sent == []  # waiting
    assert reconcile(later, send=sent.append, held=lambda: None).sent == []  # cannot tell
    assert reconcile(later, send=sent.append, held=lambda: set()).sent == [job.id]  # lost
    assert stored(job.id).enqueue_attempts == 2


def test_a_message_seen_on_the_second_look_is_not_lost(database: str) -> None:
    """A worker takes a message off the queue, then records it as unacknowledged."""
    job = jobs.submit(SPEC, lambda _: None).job
    looks = iter([set(), {str(job.id)}])
    later = utcnow() + timedelta(seconds=GRACE + 1)
    assert reconcile(later, send=lambda _: None, held=lambda: next(looks)).sent == []


def test_started_jobs_are_left_alone(database: str) -> None:
    job = jobs.submit(SPEC, broker_down).job
    with unit_of_work() as session:
        started = store.get_job(session, job.id)
        store.start_job(session, started, {run.id: 10 for run in started.runs}, "cpu")
    assert reconcile(send=lambda _: None, held=lambda: set()).sent == []


def test_two_reconcilers_claim_a_job_once(database: str) -> None:
    job = jobs.submit(SPEC, broker_down).job
    now = utcnow()
    with unit_of_work() as session:
        assert store.claim_enqueue(session, job.id, None, now)
    with unit_of_work() as session:
        assert not store.claim_enqueue(session, job.id, None, now)
        assert store.claim_enqueue(session, job.id, now, now + timedelta(seconds=1))


@pytest.fixture
def redis_broker(
    postgres_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[object]:
    """Redis (db 15, emptied) as this process's broker; PostgreSQL as its database."""
    require_port("127.0.0.1", 6379, "Redis")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    monkeypatch.setenv("OPTBENCH_HOME", str(tmp_path))
    yield client
    client.flushdb()
    reset_client()


def use_broker(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTBENCH_BROKER_URL", url)
    get_settings.cache_clear()
    reset_client()


def test_with_redis_a_job_committed_while_it_was_down_reaches_the_queue(
    redis_broker: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    client = redis_broker
    assert isinstance(client, redis.Redis)
    use_broker("redis://127.0.0.1:1/15", monkeypatch)  # nothing listens on port 1
    job = jobs.submit(SPEC).job  # the real enqueue_job: it fails, the job stays queued
    assert stored(job.id).enqueued_at is None and stored(job.id).status == "queued"
    assert reconcile().broker_down

    use_broker(REDIS_URL, monkeypatch)  # the broker is back
    assert jobs_in_broker() == set()
    assert reconcile().sent == [job.id]
    assert client.llen(QUEUE) == 1
    assert jobs_in_broker() == {str(job.id)}

    later = utcnow() + timedelta(seconds=GRACE + 1)
    assert reconcile(later).sent == []  # its message is waiting: no copy
    assert client.llen(QUEUE) == 1

    # A worker took it (delivered, not acknowledged): still held, still no copy.
    raw = client.rpop(QUEUE)
    assert isinstance(raw, bytes)
    client.hset("unacked", "tag-1", b"[" + raw + b', "optbench", "optbench"]')
    assert jobs_in_broker() == {str(job.id)}
    assert reconcile(later).sent == []

    client.delete("unacked")  # the broker lost it (e.g. Redis restarted without its data)
    assert reconcile(later).sent == [job.id]
    assert client.llen(QUEUE) == 1


def test_with_redis_a_worker_receives_the_reconciled_task(
    redis_broker: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message the reconciler sends is a run_job task a Celery consumer receives."""
    from kombu import Connection, Queue

    from services.queue import RUN_JOB_TASK

    use_broker("redis://127.0.0.1:1/15", monkeypatch)
    job = jobs.submit(SPEC).job
    use_broker(REDIS_URL, monkeypatch)
    assert reconcile().sent == [job.id]
    with Connection(REDIS_URL) as connection:
        message = connection.SimpleQueue(Queue(QUEUE, routing_key=QUEUE)).get(timeout=5)
        assert message.headers["task"] == RUN_JOB_TASK
        assert message.decode()[0] == [str(job.id)]
        message.ack()

"""Nothing lost at submission: a job stored while the broker is down is sent once it is back
(services/reconcile.py), with a real Redis broker where one is reachable."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from services import jobs
from services.db import leases, store
from services.db.leases import REQUEUED_WORKER
from services.db.models import Job, Run, utcnow
from services.db.session import unit_of_work
from services.queue import (
    QUEUE,
    RUN_JOB_PART_TASK,
    RunsInBroker,
    enqueue_job,
    enqueue_part,
    jobs_in_broker,
    reset_client,
    runs_in_broker,
)
from services.reconcile import LOST, VANISHED, Requeued, reconcile
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
REDIS_URL = os.environ.get("OPTBENCH_TEST_REDIS_RECONCILE", "redis://127.0.0.1:6379/9")


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


# --- Runs whose worker vanished, or whose part message was lost ----------------------------

RUNS_SPEC = JobSpec.model_validate(
    {**SPEC.model_dump(mode="json"), "name": "requeued", "seeds": [0, 1, 2, 3, 4]}
)
TIMEOUT = get_settings().heartbeat_timeout
# Its own Redis database (13 is the load test's, 14 the tests above, 15 the integration's).
REDIS_RUNS_URL = os.environ.get("OPTBENCH_TEST_REDIS_REQUEUE", "redis://127.0.0.1:6379/12")
NO_BROKER: Callable[[], RunsInBroker | None] = lambda: None  # noqa: E731  (cannot tell)
EMPTY_BROKER: Callable[[], RunsInBroker | None] = lambda: RunsInBroker()  # noqa: E731
Part = tuple[str, list[int], int, int, int]


def running_job(started: tuple[int, ...] = ()) -> tuple[uuid.UUID, list[int]]:
    """A running job of five runs (its parts sent): the runs at ``started`` running."""
    job = jobs.submit(RUNS_SPEC, lambda _: None).job
    with unit_of_work() as session:
        loaded = store.get_job(session, job.id)
        store.start_job(session, loaded, {run.id: 10 for run in loaded.runs}, "cpu")
        run_ids = [run.id for run in loaded.runs]
        for index in started:
            store.start_run(session, run_ids[index])
    return job.id, run_ids


def stamp(run_ids: list[int], at: datetime | None, worker: str | None) -> None:
    """What a worker's heartbeat at ``at`` leaves (set directly, to control the clock)."""
    with unit_of_work() as session:
        session.execute(
            update(Run).where(Run.id.in_(run_ids)).values(heartbeat_at=at, worker=worker)
        )


def runs_of(run_ids: list[int]) -> dict[int, Run]:
    with unit_of_work() as session:
        return {run.id: run for run in session.scalars(select(Run).where(Run.id.in_(run_ids)))}


def test_runs_whose_worker_stopped_beating_are_sent_again_once(database: str) -> None:
    job_id, (a0, a1, b0, c0, c1) = running_job(started=(0, 2))
    beat = utcnow()
    stamp([a0, a1], beat, "host-a:11")  # part A: a0 running, a1 queued behind it
    stamp([b0], beat + timedelta(seconds=TIMEOUT), "host-b:22")  # part B beats later on
    # c0, c1: never taken by a worker (no heartbeat): a broker that cannot tell leaves them
    sent: list[Part] = []

    def send_part(*part: Any) -> None:
        sent.append(part)

    soon = beat + timedelta(seconds=TIMEOUT / 2)
    assert reconcile(soon, send_part=send_part, runs_held=NO_BROKER).requeued == []
    later = beat + timedelta(seconds=TIMEOUT + 1)
    result = reconcile(later, send_part=send_part, runs_held=NO_BROKER)
    assert result.requeued == [Requeued(job_id, [a0, a1], VANISHED, "host-a:11")]
    assert sent == [(str(job_id), [a0, a1], 1, 0, 0)] and not result.broker_down
    rows = runs_of([a0, a1, b0])
    assert rows[a0].worker == rows[a1].worker == REQUEUED_WORKER
    assert rows[a0].heartbeat_at == later and rows[a0].status == "running"
    assert rows[a1].status == "queued" and rows[b0].worker == "host-b:22"

    # Sent again, waiting for a worker: not sent again, however long it waits (this broker
    # cannot say whether the message still waits).
    much_later = later + timedelta(seconds=10 * (TIMEOUT + GRACE))
    stamp([b0], much_later, "host-b:22")  # part B beats on
    for moment in (later, much_later):
        assert reconcile(moment, send_part=send_part, runs_held=NO_BROKER).requeued == []
    assert len(sent) == 1

    # A broker that can tell, and holds none of their messages: lost, sent again as one part
    # (c0 and c1, never taken, too).
    result = reconcile(much_later, send_part=send_part, runs_held=EMPTY_BROKER)
    assert result.requeued == [Requeued(job_id, [a0, a1, c0, c1], LOST)]
    assert sent[1:] == [(str(job_id), [a0, a1, c0, c1], 1, 0, 0)]

    # A worker takes them and beats: fresh, left alone.
    with unit_of_work() as session:
        leases.heartbeat_runs(session, [a0, a1, b0, c0, c1], "host-c:33")
    fresh = store_now() + timedelta(seconds=TIMEOUT / 2)
    assert reconcile(fresh, send_part=send_part, runs_held=EMPTY_BROKER).requeued == []


def store_now() -> datetime:
    with unit_of_work() as session:
        return store.database_now(session)


def test_finished_runs_and_jobs_and_runs_without_heartbeats_are_left_alone(
    database: str,
) -> None:
    old = utcnow() - timedelta(seconds=TIMEOUT + GRACE + 10)
    ended_job, ended_runs = running_job(started=(0, 1))
    stamp(ended_runs, old, "host-a:1")
    cancelled_job, cancelled_runs = running_job(started=(0, 1))
    stamp(cancelled_runs, old, "host-a:1")
    job_id, (done, alive, silent, queued, other) = running_job(started=(0, 1, 2))
    stamp([done, alive, queued, other], old, "host-a:1")
    with unit_of_work() as session:
        store.finish_job(session, ended_job, summary={})
        store.cancel_job(session, store.get_job(session, cancelled_job))
        session.execute(update(Run).where(Run.id == done).values(status="succeeded"))
        session.execute(update(Run).where(Run.id == other).values(status="failed"))
    stamp([silent], None, None)  # running, from a worker that does not beat: no liveness
    sent: list[Part] = []
    result = reconcile(send_part=lambda *part: sent.append(part), runs_held=EMPTY_BROKER)
    assert result.requeued == [Requeued(job_id, [alive, queued], VANISHED, "host-a:1")]
    assert sent == [(str(job_id), [alive, queued], 1, 0, 0)]


def test_a_worker_that_beats_after_the_look_keeps_its_runs(database: str) -> None:
    """The claim is a compare-and-set: a heartbeat between the reconciler's read and its
    claim wins."""
    _, run_ids = running_job(started=(0,))
    stamp(run_ids[:1], utcnow() - timedelta(seconds=TIMEOUT + 5), "host-a:1")

    def worker_beats() -> RunsInBroker | None:  # called between the read and the claim
        with unit_of_work() as session:
            leases.heartbeat_runs(session, run_ids[:1], "host-a:1")
        return None

    sent: list[Part] = []
    result = reconcile(send_part=lambda *part: sent.append(part), runs_held=worker_beats)
    assert result.requeued == [] and sent == []
    assert runs_of(run_ids)[run_ids[0]].worker == "host-a:1"


def test_two_reconcilers_at_once_send_a_vanished_part_once(database: str) -> None:
    job_id, run_ids = running_job(started=(0, 1))
    stamp(run_ids, utcnow() - timedelta(seconds=TIMEOUT + 5), "host-a:1")
    seen = leases.OpenRun(
        run_ids[0], job_id, "running", runs_of(run_ids)[run_ids[0]].heartbeat_at, "host-a:1"
    )
    now = utcnow()
    with unit_of_work() as session:
        assert leases.claim_requeue(session, seen, now)
    with unit_of_work() as session:
        assert not leases.claim_requeue(session, seen, now)  # already claimed
        leases.release_requeue(session, seen, now)  # the broker refused: as it was
    with unit_of_work() as session:
        assert leases.claim_requeue(session, seen, now)
        leases.release_requeue(session, seen, now)

    sent: list[Part] = []
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def one_pass() -> None:
        try:
            barrier.wait(timeout=10)
            reconcile(send_part=lambda *part: sent.append(part), runs_held=NO_BROKER)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=one_pass) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(run for part in sent for run in part[1]) == sorted(run_ids)


def test_runs_wait_when_the_broker_refuses_the_part(database: str) -> None:
    job_id, run_ids = running_job(started=(0,))
    old = utcnow() - timedelta(seconds=TIMEOUT + 5)
    stamp(run_ids, old, "host-a:1")
    refused = reconcile(send_part=lambda *part: broker_down(job_id), runs_held=NO_BROKER)
    assert refused.broker_down and refused.requeued == []
    rows = runs_of(run_ids)
    assert all(row.worker == "host-a:1" and row.heartbeat_at == old for row in rows.values())
    sent: list[Part] = []
    result = reconcile(send_part=lambda *part: sent.append(part), runs_held=NO_BROKER)
    assert [item.runs for item in result.requeued] == [run_ids] and len(sent) == 1


def test_reconcile_prints_the_runs_it_sent_again(
    embedded_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``optbench reconcile`` on the embedded default: a vanished part goes to the
    filesystem broker, as a message a worker would take."""
    from services.cli import main

    job_id, run_ids = running_job(started=(0,))
    stamp(run_ids[:2], utcnow() - timedelta(seconds=TIMEOUT + 5), "host-a:1")
    assert main(["reconcile", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sent"] == [] and not out["broker_down"]
    assert out["requeued"] == [
        {"job": str(job_id), "runs": run_ids[:2], "reason": "vanished", "worker": "host-a:1"}
    ]
    messages = list((embedded_home / "broker" / "queue").iterdir())
    assert len(messages) == 1
    body = json.loads(messages[0].read_text())
    assert body["headers"]["task"] == RUN_JOB_PART_TASK

    stamp(run_ids[2:3], utcnow() - timedelta(seconds=TIMEOUT + 5), "host-b:2")
    assert main(["reconcile"]) == 0
    text = capsys.readouterr().out
    assert f"requeued runs {run_ids[2]} of job {job_id}: worker host-b:2 stopped beating" in text
    assert "0 job(s) sent, 1 run(s) requeued" in text


@pytest.fixture
def redis_runs(postgres_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Redis (its own database, emptied) as this process's broker; PostgreSQL as its database."""
    require_port("127.0.0.1", 6379, "Redis")
    import redis

    client = redis.Redis.from_url(REDIS_RUNS_URL)
    client.flushdb()
    monkeypatch.setenv("OPTBENCH_HOME", str(tmp_path))
    use_broker(REDIS_RUNS_URL, monkeypatch)
    yield client
    client.flushdb()
    reset_client()


def take(client: Any) -> None:
    """A worker takes the oldest waiting message of the lowest rank (a list per rank:
    services/queue.py): it moves to the unacked hash."""
    lists = [QUEUE, *(f"{QUEUE}\x06\x16{rank}" for rank in range(1, 10))]
    raw = next((raw for raw in map(client.rpop, lists) if raw is not None), None)
    assert isinstance(raw, bytes)
    client.hset("unacked", f"tag-{uuid.uuid4()}", b"[" + raw + b', "optbench", "optbench"]')


def test_with_redis_runs_are_sent_again_only_when_their_part_is_gone(redis_runs: Any) -> None:
    client = redis_runs
    job_id, (waiting, taken, lost, dead, redelivered) = running_job()
    job = str(job_id)
    enqueue_part(job, [taken], 1, 2, 5)
    take(client)  # delivered to a live worker, which has not beaten yet
    enqueue_part(job, [dead], 1, 3, 5)
    take(client)  # ... to a worker that died: Redis keeps it unacked for a week
    enqueue_part(job, [waiting], 1, 1, 5)  # still waiting for a worker
    enqueue_part(job, [redelivered], 1, 4, 5)  # its worker died, Redis gave it back
    # lost: its message is gone (Redis restarted without its data)
    old = utcnow() - timedelta(seconds=TIMEOUT + 5)
    stamp([dead, redelivered], old, "host-d:4")
    with unit_of_work() as session:
        store.start_run(session, dead)
        store.start_run(session, redelivered)
    assert runs_in_broker() == RunsInBroker(
        waiting=frozenset({waiting, redelivered}), unacked=frozenset({taken, dead})
    )

    later = utcnow() + timedelta(seconds=GRACE + 1)
    result = reconcile(later)
    assert result.requeued == [
        Requeued(job_id, [lost], LOST, None),
        Requeued(job_id, [dead], VANISHED, "host-d:4"),
    ]
    held = runs_in_broker()
    assert held is not None and held.waiting == {waiting, redelivered, lost, dead}
    assert reconcile(later).requeued == []  # their new messages wait: no copies

    # A Celery consumer receives the part the reconciler sent.
    from kombu import Connection
    from kombu import Queue as KombuQueue

    with Connection(REDIS_RUNS_URL) as connection:
        queue = connection.SimpleQueue(KombuQueue(QUEUE, routing_key=QUEUE))
        parts = []
        for _ in range(4):
            message = queue.get(timeout=5)
            assert message.headers["task"] == RUN_JOB_PART_TASK
            parts.append(message.decode()[1]["run_ids"])
            message.ack()
    assert sorted(parts) == sorted([[waiting], [redelivered], [lost], [dead]])

    # Redis loses everything: the runs no worker had taken, and the one whose worker died,
    # are sent again; those sent again at ``later`` once the grace period has passed.
    client.flushdb()
    result = reconcile(later)
    assert [(item.reason, item.runs) for item in result.requeued] == [
        (LOST, [waiting, taken]),
        (VANISHED, [redelivered]),
    ]
    client.flushdb()
    assert reconcile(later + timedelta(seconds=GRACE / 2)).requeued == []
    result = reconcile(later + timedelta(seconds=GRACE + 1))
    assert [(item.reason, item.runs) for item in result.requeued] == [
        (LOST, [waiting, taken, lost, dead, redelivered])
    ]


def test_with_redis_a_waiting_planning_message_keeps_the_jobs_runs(redis_runs: Any) -> None:
    """A redelivered ``run_job`` trains part 1 and sends again the parts never started."""
    client = redis_runs
    job_id, run_ids = running_job()
    enqueue_job(job_id)
    later = utcnow() + timedelta(seconds=GRACE + 1)
    assert reconcile(later).requeued == []
    take(client)  # a worker took it: the parts are its to send, or lost
    assert [item.runs for item in reconcile(later).requeued] == [run_ids]


def test_runs_in_broker_reads_celery_messages_and_skips_others(redis_runs: Any) -> None:
    client = redis_runs
    enqueue_part("a-job", [3, 4], 1, 2, 3)
    take(client)
    enqueue_part("a-job", [7], 2, 3, 3)
    enqueue_job(uuid.UUID(int=5))
    client.lpush(QUEUE, b"not json")
    client.hset("unacked", "junk", b'{"not": "a list"}')
    assert runs_in_broker() == RunsInBroker(
        waiting=frozenset({7}),
        unacked=frozenset({3, 4}),
        planning=frozenset({str(uuid.UUID(int=5))}),
    )

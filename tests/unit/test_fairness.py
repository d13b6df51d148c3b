"""Dispatch by owner rank (services/fairness.py, services/queue.py): what the broker hands a
free worker next. The tasks are sent as the API and the planning task send them, to a real
Redis, and taken back as a worker takes them; the jobs are stored in SQLite and PostgreSQL.

The end-to-end measurement (real workers, one owner's long jobs, another owner's short job)
is tests/integration/test_fairness.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection

from services import fairness
from services.db import store
from services.db.session import unit_of_work
from services.queue import (
    QUEUE,
    RUN_JOB_PART_TASK,
    celery_config,
    enqueue_job,
    enqueue_part,
    priority,
    runs_in_broker,
)
from services.settings import Settings, get_settings
from services.spec import JobSpec
from tests.conftest import reset_process_state
from tests.integration.faults_support import RedisServer

SPEC = JobSpec.model_validate(
    {
        "dataset": {"name": "iris"},
        "model": {"name": "linear"},
        "optimizers": [{"name": "sgd", "lr": 0.1}],
        "epochs": 1,
    }
)


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module's own: no worker of another test can take a message."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_broker(
    database: str, own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    import redis

    redis.Redis.from_url(own_redis.url).flushdb()
    monkeypatch.setenv("OPTBENCH_BROKER_URL", own_redis.url)
    reset_process_state()
    yield own_redis.url
    reset_process_state()


def submit(owner: str) -> uuid.UUID:
    """Store a job and send it, as services/jobs.py does (the commit, then the send)."""
    with unit_of_work() as session:
        job_id = store.create_job(session, SPEC, owner).id
    enqueue_job(job_id)
    return job_id


def taken_in_order() -> list[tuple[str, int]]:
    """(job id, part) of every waiting task, in the order a worker takes them (the worker's
    transport options: the same ``celery_config``)."""
    config = celery_config(get_settings())
    taken = []
    with Connection(
        config["broker_url"], transport_options=config["broker_transport_options"]
    ) as connection:
        queue = connection.SimpleQueue(QUEUE)
        while True:
            try:
                message = queue.get(timeout=0.5)
            except queue.Empty:
                break
            args, kwargs = message.payload[:2]
            if message.headers["task"] == RUN_JOB_PART_TASK:
                taken.append((kwargs["job_id"], kwargs["part"]))
            else:
                taken.append((args[0], 1))
            message.ack()
        queue.close()
    return taken


@pytest.mark.integration  # a real Redis
def test_a_free_worker_takes_the_task_of_the_owner_with_the_least_work_ahead(
    redis_broker: str,
) -> None:
    alice = [submit("alice") for _ in range(3)]  # ranks 0, 1, 2
    enqueue_part(str(alice[0]), [1], 1, 2, 2)  # her first job's part 2: rank 2 + 1
    bob = submit("bob")  # rank 0: nothing of bob's ahead of it
    enqueue_part(str(bob), [2], 1, 2, 2)  # rank 1
    order = taken_in_order()
    assert order == [
        (str(alice[0]), 1),
        (str(bob), 1),  # before alice's second job, though sent after her part
        (str(alice[1]), 1),
        (str(bob), 2),
        (str(alice[2]), 1),
        (str(alice[0]), 2),
    ]


@pytest.mark.integration  # a real Redis
def test_ranks_count_the_owner_s_jobs_in_flight_only(redis_broker: str) -> None:
    first, second = submit("carol"), submit("carol")
    assert fairness.task_rank(first) == 1 and fairness.task_rank(second, part=3) == 3
    with unit_of_work() as session:  # a finished job is no work ahead
        job = store.get_job(session, first)
        store.finish_job(session, job.id, error="stopped")
    assert fairness.task_rank(second) == 0
    assert fairness.task_rank(second, part=0) == 0  # a part the reconciler sends again
    for _ in range(12):
        submit("dave")
    assert fairness.task_rank(submit("dave"), part=5) == fairness.MAX_RANK  # capped


@pytest.mark.integration  # a real Redis
def test_the_broker_still_reads_every_rank_s_messages(redis_broker: str) -> None:
    """The reconciler's view of the queue (``runs_in_broker``) sees parts at every rank."""
    owner_jobs = [submit("erin") for _ in range(4)]
    for number, job_id in enumerate(owner_jobs, start=1):
        enqueue_part(str(job_id), [100 + number], 1, 2, 2)
    held = runs_in_broker()
    assert held is not None
    assert held.waiting == {101, 102, 103, 104}
    assert held.planning == {str(job_id) for job_id in owner_jobs}


@pytest.mark.integration  # a real Redis
def test_a_rank_lookup_that_fails_sends_at_rank_0(
    redis_broker: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def database_away(_: object) -> int:
        raise ConnectionRefusedError("database away")

    monkeypatch.setattr(fairness, "job_rank", database_away)
    assert fairness.task_rank(uuid.uuid4(), part=4) == 0
    assert "rank unknown (ConnectionRefusedError" in caplog.text


def test_priorities_per_broker() -> None:
    redis_settings = Settings(broker_url="redis://broker:6379/0")
    options = celery_config(redis_settings)["broker_transport_options"]
    assert options["priority_steps"] == list(range(10))  # a list per rank
    assert [priority(rank, "redis://broker") for rank in (0, 4, 9, 30)] == [0, 4, 9, 9]
    # RabbitMQ takes higher priorities first, from a queue declared with x-max-priority.
    assert celery_config(Settings(broker_url="amqp://broker//"))["task_queue_max_priority"] == 9
    assert [priority(rank, "amqp://broker//") for rank in (0, 4, 9)] == [9, 5, 0]
    assert "task_queue_max_priority" not in celery_config(redis_settings)

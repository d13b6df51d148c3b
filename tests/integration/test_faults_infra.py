"""Infrastructure faults in the middle of a job, against the real ``optbench api`` and
``optbench worker`` processes: PostgreSQL unreachable for several seconds, Redis restarted.

Either way the job must succeed as if nothing had happened: every run has exactly its
``total_steps`` step rows (steps 1..N, each once) and one row per epoch, read from PostgreSQL
itself. While PostgreSQL is away the worker's SQL sink holds the rows and retries its write
(workers/sinks/sql.py) and the API answers 503 (it reaches the database through the same
proxy), so the test polls tolerantly. Each test runs its own Redis (tests/integration/
faults_support.py), so no other test's worker can take its tasks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, make_url, text

from services.spec import LECTURE_SPEC
from tests.integration.conftest import Cluster, running_cluster
from tests.integration.faults_support import RedisServer, TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PASSWORD = "not-a-real-password-5813"  # trust authentication never asks for it
OUTAGE_SECONDS = 7.0
# One part: the fault hits the training of the job, not the start of a second part's task.
ENV = {"OPTBENCH_JOB_PARTS": "1"}


def long_spec(name: str, epochs: int) -> dict[str, Any]:
    """The lecture job (digits, an MLP, 8 optimizers, 7 of them fused): 17 steps per epoch,
    one for full-batch gd."""
    return {**LECTURE_SPEC, "name": name, "epochs": epochs}


def job_now(client: httpx.Client, job_id: str) -> dict[str, Any] | None:
    """The job as the API shows it, or None while the API cannot answer (503, no socket)."""
    try:
        response = client.get(f"/v1/jobs/{job_id}")
    except httpx.TransportError:
        return None
    return dict(response.json()) if response.status_code == 200 else None


def wait_for_job(
    cluster: Cluster, job_id: str, until: Any, timeout: float, what: str
) -> dict[str, Any]:
    """Poll the job until ``until(job)`` holds; tolerates 503s and refused connections."""
    found: dict[str, Any] = {}

    def check() -> bool:
        job = job_now(cluster.client, job_id)
        if job is None:
            return False
        found.update(job)
        return bool(until(job))

    cluster.wait_for(check, timeout, what)
    return found


def mid_training(job: dict[str, Any]) -> bool:
    """Running, with some steps stored and most still to come."""
    fraction = job["progress"]["fraction"] or 0.0
    assert job["status"] in ("queued", "running"), job
    assert fraction < 0.5, f"the job went too fast to cut it in the middle: {fraction:.2f}"
    return bool(job["status"] == "running" and fraction >= 0.1)


def ended(job: dict[str, Any]) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


def submit(cluster: Cluster, spec: dict[str, Any]) -> str:
    response = cluster.client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def assert_every_row_stored_once(database_url: str, job_id: str, epochs: int) -> None:
    """Per run, read from PostgreSQL: total_steps step rows, steps 1..total each once, and
    epochs 1..epochs each once."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            runs = connection.execute(
                text("""
                SELECT r.label, r.status, r.total_steps, r.steps_done,
                       count(s.step), count(DISTINCT s.step), min(s.step), max(s.step)
                FROM run r LEFT JOIN step_metric s ON s.run_id = r.id
                WHERE r.job_id = :job
                GROUP BY r.id ORDER BY r.id
                """),
                {"job": job_id},
            ).all()
            epoch_rows = connection.execute(
                text("""
                SELECT r.label, count(e.epoch), count(DISTINCT e.epoch), min(e.epoch),
                       max(e.epoch)
                FROM run r LEFT JOIN epoch_metric e ON e.run_id = r.id
                WHERE r.job_id = :job
                GROUP BY r.id ORDER BY r.id
                """),
                {"job": job_id},
            ).all()
    finally:
        engine.dispose()
    assert len(runs) == len(LECTURE_SPEC["optimizers"])
    for label, status, total, done, count, distinct, first, last in runs:
        per_epoch = 1 if label == "gd" else 17  # 1,077 training samples / 64 = 17 batches
        assert total == per_epoch * epochs, label
        assert (status, done, count, distinct, first, last) == (
            "succeeded",
            total,
            total,
            total,
            1,
            total,
        ), label
    for label, count, distinct, first, last in epoch_rows:
        assert (count, distinct, first, last) == (epochs, epochs, 1, epochs), label


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_postgres_unreachable_mid_job_the_worker_retries_and_every_row_lands_once(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory, own_redis: RedisServer
) -> None:
    real = make_url(postgres_url)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432))
    proxy.forward()
    through = real.set(port=proxy.port, password=PASSWORD).render_as_string(hide_password=False)
    epochs = 250
    try:
        with running_cluster(
            through, tmp_path_factory, redis_url=own_redis.url, env=ENV
        ) as cluster:
            job_id = submit(cluster, long_spec("postgres away", epochs))
            wait_for_job(cluster, job_id, mid_training, 60, "the job to be mid-training")
            retries_before = cluster.worker_total("optbench_metric_write_retries_total")

            proxy.refuse()  # PostgreSQL is gone for the worker and the API
            cut = time.monotonic()
            time.sleep(1.0)
            answer = cluster.client.get(f"/v1/jobs/{job_id}")
            assert answer.status_code == 503, answer.text
            time.sleep(OUTAGE_SECONDS - (time.monotonic() - cut))
            proxy.forward()
            back = time.monotonic()

            job = wait_for_job(cluster, job_id, ended, 120, "the job to end")
            finished = time.monotonic()
            assert job["status"] == "succeeded", job["error"]
            # The outage hit the worker's writes: it retried, and went on after.
            retries = cluster.worker_total("optbench_metric_write_retries_total") - retries_before
            assert retries >= 1
            assert cluster.client.get("/readyz").status_code == 200  # the API recovered
            assert cluster.client.get("/v1/jobs").status_code == 200
            worker_log = cluster.logs[1].read_text()
    finally:
        proxy.refuse()

    assert_every_row_stored_once(postgres_url, job_id, epochs)
    assert "the database cannot be reached" in worker_log
    assert "stored after" in worker_log
    assert PASSWORD not in worker_log
    stored = [line.split("] ")[-1] for line in worker_log.splitlines() if "stored after" in line]
    print(
        f"outage {OUTAGE_SECONDS:.0f} s, {retries:.0f} write retries ({stored[-1]}); "
        f"job ended {finished - back:.1f} s after the database came back"
    )


def test_redis_restarted_mid_job_the_job_and_the_next_one_succeed(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory, own_redis: RedisServer
) -> None:
    epochs = 200
    with running_cluster(
        postgres_url, tmp_path_factory, redis_url=own_redis.url, env=ENV
    ) as cluster:
        job_id = submit(cluster, long_spec("redis restarted", epochs))
        wait_for_job(cluster, job_id, mid_training, 60, "the job to be mid-training")

        own_redis.stop()  # SIGTERM: Redis writes its append-only file and exits
        time.sleep(4.0)
        own_redis.start()  # the same port and folder: the queue as it was
        back = time.monotonic()

        job = wait_for_job(cluster, job_id, ended, 120, "the job to end")
        assert job["status"] == "succeeded", job["error"]
        assert_every_row_stored_once(postgres_url, job_id, epochs)
        # Its task went on through the restart and was acknowledged: nothing left in Redis.
        broker = redis.Redis.from_url(own_redis.url)
        assert broker.llen("optbench") == 0 and broker.hlen("unacked") == 0

        # The worker reconnected: a job submitted now is picked up and trained.
        second = submit(cluster, long_spec("after the restart", 2))
        job = wait_for_job(cluster, second, ended, 60, "the second job to end")
        assert job["status"] == "succeeded", job["error"]
        assert_every_row_stored_once(postgres_url, second, 2)
        finished = time.monotonic()
        worker_log = cluster.logs[1].read_text()
    assert "Connection to broker lost" in worker_log  # the restart did reach the worker
    print(f"Redis away 4 s; both jobs done {finished - back:.1f} s after it came back")

"""The cluster's own commands as processes: ``optbench migrate``, ``optbench api`` and
``optbench worker`` against real PostgreSQL and Redis, as docker-compose runs them.

Submit the lecture job over HTTP, wait for ``succeeded``, then count the step rows in
PostgreSQL: exactly runs x steps, none missing, none twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from services.spec import LECTURE_SPEC
from tests.support import free_port, require_port

REDIS_URL = os.environ.get("OPTBENCH_TEST_REDIS", "redis://127.0.0.1:6379/15")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster_env(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    require_port("127.0.0.1", 6379, "Redis")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()  # no tasks left over from an earlier session
    return {
        **os.environ,
        "OPTBENCH_DATABASE_URL": postgres_url,
        "OPTBENCH_BROKER_URL": REDIS_URL,
        "OPTBENCH_HOME": str(tmp_path_factory.mktemp("home")),
        "OPTBENCH_WORKER_METRICS_PORT": str(free_port()),
        "OPTBENCH_FLUSH_EVERY_STEPS": "16",
    }


def start(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_for(predicate, timeout: float, what: str, logs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
    pytest.fail(f"timed out waiting for {what}\n{tails}")


@pytest.fixture(scope="module")
def api_and_worker(
    cluster_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, list[Path]]]:
    logs_dir = tmp_path_factory.mktemp("logs")
    port = free_port()
    api_log, worker_log = logs_dir / "api.log", logs_dir / "worker.log"
    api = start(cluster_env, "api", "--port", str(port), log=api_log)
    worker = start(cluster_env, "worker", "--concurrency", "1", log=worker_log)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200, 60, "the API", [api_log])
        yield client, [api_log, worker_log]
    finally:
        client.close()
        stop(api)
        stop(worker)


def test_lecture_job_lands_every_step_exactly_once_in_postgres(
    api_and_worker: tuple[httpx.Client, list[Path]], postgres_url: str, cluster_env: dict[str, str]
) -> None:
    client, logs = api_and_worker
    response = client.post("/v1/jobs", json={**LECTURE_SPEC, "epochs": 3})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    wait_for(
        lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] in ("succeeded", "failed"),
        240,
        "the job to finish",
        logs,
    )
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["fraction"] == 1.0

    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("""
            SELECT r.label, r.total_steps, count(s.step), count(DISTINCT s.step),
                   min(s.step), max(s.step)
            FROM run r LEFT JOIN step_metric s ON s.run_id = r.id
            WHERE r.job_id = :job GROUP BY r.id, r.label, r.total_steps ORDER BY r.id
        """),
            {"job": job_id},
        ).all()
        epochs = connection.execute(
            text(
                "SELECT count(*) FROM epoch_metric e JOIN run r ON r.id = e.run_id "
                "WHERE r.job_id = :job"
            ),
            {"job": job_id},
        ).scalar()
    engine.dispose()

    assert [row[0] for row in rows] == [o["name"] for o in LECTURE_SPEC["optimizers"]]
    for label, total, count, distinct, first, last in rows:
        expected = 3 if label == "gd" else 3 * 17  # 1,077 training samples / 64 = 17 batches
        assert (total, count, distinct, first, last) == (
            expected,
            expected,
            expected,
            1,
            expected,
        ), label
    assert epochs == 8 * 3

    series = client.get(f"/v1/jobs/{job_id}/metrics", params={"granularity": "step"}).json()
    assert [len(run["series"]["loss"]) for run in series["runs"]] == [3] + [51] * 7
    summary = client.get(f"/v1/jobs/{job_id}/summary").json()
    assert [row["label"] for row in summary["optimizers"]] == [r[0] for r in rows]

    # The worker's own /metrics counted what it trained.
    port = cluster_env["OPTBENCH_WORKER_METRICS_PORT"]
    exposition = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    steps = sum(
        float(line.split()[-1])
        for line in exposition.splitlines()
        if line.startswith("optbench_train_steps_total{")
    )
    assert steps == 3 + 7 * 51
    assert 'optbench_jobs_finished_total{status="succeeded"} 1.0' in exposition

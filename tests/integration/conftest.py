"""The cluster's own processes for integration tests: ``optbench api`` and ``optbench worker``
on the session's PostgreSQL database and a real Redis broker, as docker-compose runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.invariants import assert_stored_metrics_valid
from tests.support import free_port, require_port, stop_processes

REDIS_URL = os.environ.get("OPTBENCH_TEST_REDIS", "redis://127.0.0.1:6379/15")


@dataclass
class Cluster:
    client: httpx.Client  # the API
    api_port: int
    worker_metrics_port: int  # the first worker's
    database_url: str
    logs: list[Path]
    worker_metrics_ports: list[int] = field(default_factory=list)  # every worker's

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.logs)
        pytest.fail(f"timed out waiting for {what}\n{tails}")

    def worker_total(self, sample_name: str, **labels: str) -> float:
        """Sum of a worker's samples of that name (and labels) on its /metrics now."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"http://127.0.0.1:{self.worker_metrics_port}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == sample_name
            and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def run_job(self, spec: dict, timeout: float = 240) -> dict:  # type: ignore[type-arg]
        response = self.client.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        self.wait_for(
            lambda: (
                self.client.get(f"/v1/jobs/{job_id}").json()["status"] in ("succeeded", "failed")
            ),
            timeout,
            "the job to finish",
        )
        return dict(self.client.get(f"/v1/jobs/{job_id}").json())


def _start(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


@contextmanager
def running_cluster(
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    redis_url: str = REDIS_URL,
    worker_args: tuple[str, ...] = ("--concurrency", "1"),
    env: dict[str, str] | None = None,
    workers: int = 1,
) -> Iterator[Cluster]:
    """``optbench api`` and ``workers`` ``optbench worker`` processes (each with
    ``worker_args`` and its own metrics port) on the database and a Redis broker (emptied
    first: no tasks left over from an earlier session); stopped afterwards."""
    require_port("127.0.0.1", 6379, "Redis")
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    worker_metrics_ports = [free_port() for _ in range(workers)]
    api_port = free_port()
    environment = {
        **os.environ,
        "OPTBENCH_DATABASE_URL": postgres_url,
        "OPTBENCH_BROKER_URL": redis_url,
        "OPTBENCH_HOME": str(tmp_path_factory.mktemp("home")),
        "OPTBENCH_WORKER_METRICS_PORT": str(worker_metrics_ports[0]),
        "OPTBENCH_FLUSH_EVERY_STEPS": "16",
        # The tests' client calls from loopback without a key; on PostgreSQL that needs the
        # operator's explicit opt-in (the default there is required; test_isolation.py).
        "OPTBENCH_AUTH": "loopback",
        **(env or {}),
    }
    logs_dir = tmp_path_factory.mktemp("logs")
    worker_logs = [
        logs_dir / ("worker.log" if number == 0 else f"worker-{number + 1}.log")
        for number in range(workers)
    ]
    logs = [logs_dir / "api.log", *worker_logs]
    processes = [_start(environment, "api", "--port", str(api_port), log=logs[0])]
    for port, log in zip(worker_metrics_ports, worker_logs, strict=True):
        worker_env = {**environment, "OPTBENCH_WORKER_METRICS_PORT": str(port)}
        processes.append(_start(worker_env, "worker", *worker_args, log=log))
    client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30)
    cluster = Cluster(
        client, api_port, worker_metrics_ports[0], postgres_url, logs, worker_metrics_ports
    )
    try:
        cluster.wait_for(lambda: client.get("/readyz").status_code == 200, 60, "the API")
        for number, port in enumerate(worker_metrics_ports, start=1):
            worker_metrics = f"http://127.0.0.1:{port}/metrics"
            cluster.wait_for(
                lambda url=worker_metrics: httpx.get(url).status_code == 200,
                90,
                f"worker {number} of {workers}",
            )
        yield cluster
        assert_stored_metrics_valid(postgres_url)
    finally:
        client.close()
        stop_processes(processes, grace=20)  # each worker's warm shutdown beside the others'


# The session's cluster lives until the last test of the session, unit tests included, on
# the database they store into directly: its API's reconciler would send their queued jobs
# (and their runs with aged heartbeats) to its worker, which trained them alongside the test
# (test_crash_resume found a run "succeeded" before its simulated crash). Its jobs are sent
# at submission; the reconciler's own tests run reconcilers of their own.
SESSION_CLUSTER_ENV = {"OPTBENCH_RECONCILE_INTERVAL_SECONDS": "0"}


@pytest.fixture(scope="session")
def cluster(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(postgres_url, tmp_path_factory, env=SESSION_CLUSTER_ENV) as running:
        yield running

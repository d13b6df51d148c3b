"""kill -9 a worker in the middle of a run: the job still succeeds, on the worker started
after it, with every step stored once and the same series as an uninterrupted job.

The real processes: ``optbench api`` (its reconciler requeues runs whose heartbeat went
stale), ``optbench worker`` killed with SIGKILL (its main process and its pool's process,
as the kernel's OOM killer or a lost machine would), a second ``optbench worker``,
PostgreSQL and Redis. Both jobs have the same spec and seed, train on one thread in one part,
so the resumed series must equal the uninterrupted one (the test allows 1e-6).

Also: SIGTERM (``docker stop``) makes a worker stop at the next flush with a checkpoint and
send its runs back, so the shutdown does not wait for the job, and the next worker trains only
what was left.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.integration.conftest import Cluster, _start
from tests.support import free_port, require_port

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REDIS_URL = os.environ.get("OPTBENCH_TEST_REDIS_FAULTS", "redis://127.0.0.1:6379/11")
EPOCHS = 8
SPEC = {
    "name": "kill -9",
    "dataset": {"name": "digits"},
    # Wide enough that a step takes a millisecond or two: the kill lands mid-run.
    "model": {"name": "mlp", "hidden": [512, 512]},
    "optimizers": [{"name": "sgd", "lr": 0.05}, {"name": "momentum"}, {"name": "adam"}],
    "epochs": EPOCHS,
    "batch_size": 32,  # 1,078 training samples: 34 steps per epoch
    "seeds": [3],
}
STEPS = EPOCHS * 34


class Processes:
    """The API and workers of one test, started and stopped by it."""

    def __init__(self, postgres_url: str, tmp_path: Path) -> None:
        require_port("127.0.0.1", 6379, "Redis")
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "OPTBENCH_DATABASE_URL": postgres_url,
            "OPTBENCH_BROKER_URL": REDIS_URL,
            "OPTBENCH_HOME": str(tmp_path / "home"),
            "OPTBENCH_FLUSH_EVERY_STEPS": "16",
            "OPTBENCH_CHECKPOINT_EVERY_STEPS": "64",
            "OPTBENCH_CHECKPOINT_MIN_SECONDS": "0",
            "OPTBENCH_HEARTBEAT_SECONDS": "1",
            "OPTBENCH_HEARTBEAT_TIMEOUT_SECONDS": "3",
            "OPTBENCH_RECONCILE_INTERVAL_SECONDS": "1",
            "OPTBENCH_JOB_PARTS": "1",
            "OPTBENCH_TORCH_THREADS": "1",
            "OPTBENCH_MAX_JOBS_IN_FLIGHT": "8",
            "OPTBENCH_AUTH": "loopback",  # keyless from loopback (PostgreSQL's: required)
        }
        self.logs: list[Path] = []
        self.running: list[subprocess.Popen[bytes]] = []
        api_port = free_port()
        self.api = self.start("api", "--port", str(api_port))
        self.cluster = Cluster(
            httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30),
            api_port,
            0,
            postgres_url,
            self.logs,
        )
        self.cluster.wait_for(
            lambda: self.cluster.client.get("/readyz").status_code == 200, 60, "the API"
        )

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"{args[0]}-{len(self.logs)}.log"
        self.logs.append(log)
        env = {**self.env, "OPTBENCH_WORKER_METRICS_PORT": str(free_port())}
        process = _start(env, *args, log=log)
        self.running.append(process)
        return process

    def worker(self) -> tuple[subprocess.Popen[bytes], Path]:
        process = self.start("worker", "--concurrency", "1")
        log = self.logs[-1]
        self.cluster.wait_for(lambda: "ready" in log.read_text(), 90, "the worker")
        return process, log

    def kill_workers(self) -> None:
        for process in self.running:
            if process is not self.api:
                kill_9(process)

    def stop(self) -> None:
        self.cluster.client.close()
        for process in self.running:
            kill_9(process)


def kill_9(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to a worker's pool processes and to the worker itself."""
    for pid in [*children(process.pid), process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (a worker's pool), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def cluster_processes(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Processes]:
    running = Processes(postgres_url, tmp_path_factory.mktemp("faults"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def processes(cluster_processes: Processes) -> Processes:
    """The module's API, with no worker left from an earlier test."""
    cluster_processes.kill_workers()
    return cluster_processes


@pytest.fixture(scope="module")
def reference(cluster_processes: Processes) -> dict[str, list[tuple[int, float, float]]]:
    """The series of the job trained without interruption (on a worker of its own)."""
    cluster_processes.worker()
    cluster = cluster_processes.cluster
    job_id = submit(cluster)
    wait_until(cluster, job_id, "succeeded")
    cluster_processes.kill_workers()
    return series(cluster.database_url, job_id)


def submit(cluster: Cluster) -> str:
    response = cluster.client.post("/v1/jobs", json=SPEC)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_until(cluster: Cluster, job_id: str, status: str, timeout: float = 180) -> dict:  # type: ignore[type-arg]
    def reached() -> bool:
        return bool(cluster.client.get(f"/v1/jobs/{job_id}").json()["status"] == status)

    cluster.wait_for(reached, timeout, f"job {job_id} {status}")
    return dict(cluster.client.get(f"/v1/jobs/{job_id}").json())


def query(database_url: str, sql: str, job_id: str) -> list[Any]:
    """Rows of ``sql`` (with ``:job``) on the cluster's PostgreSQL database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql), {"job": job_id}).all())
    finally:
        engine.dispose()


def series(database_url: str, job_id: str) -> dict[str, list[tuple[int, float, float]]]:
    rows = query(
        database_url,
        "SELECT run.label, s.step, s.loss, s.grad_norm FROM step_metric s "
        "JOIN run ON run.id = s.run_id WHERE run.job_id = :job ORDER BY run.id, s.step",
        job_id,
    )
    found: dict[str, list[tuple[int, float, float]]] = {}
    for label, step, loss, norm in rows:
        found.setdefault(label, []).append((step, loss, norm))
    return found


def checkpointed_steps(database_url: str, job_id: str) -> list[int]:
    sql = (
        "SELECT c.step FROM run_checkpoint c JOIN run ON run.id = c.run_id WHERE run.job_id = :job"
    )
    return [step for (step,) in query(database_url, sql, job_id)]


def assert_same_series(got: dict, want: dict) -> None:  # type: ignore[type-arg]
    assert got.keys() == want.keys()
    for label, rows in want.items():
        assert [step for step, *_ in got[label]] == list(range(1, STEPS + 1)), label
        worst = max(
            max(abs(a[1] - b[1]), abs(a[2] - b[2])) for a, b in zip(got[label], rows, strict=True)
        )
        assert worst <= 1e-6, (label, worst)
        print(f"{label}: largest difference from the uninterrupted series {worst:.3g}")


def resumed_from(log: Path) -> list[int]:
    return [int(step) for step in re.findall(r"goes on from step (\d+)", log.read_text())]


def test_kill_9_mid_run_then_a_new_worker_finishes_the_same_series(
    processes: Processes, reference: dict[str, list[tuple[int, float, float]]]
) -> None:
    cluster = processes.cluster
    first, _ = processes.worker()
    job_id = submit(cluster)

    def mid_run() -> bool:
        progress = cluster.client.get(f"/v1/jobs/{job_id}").json()["progress"]
        return bool(
            (progress["fraction"] or 0) > 0.3 and checkpointed_steps(cluster.database_url, job_id)
        )

    cluster.wait_for(mid_run, 120, "the job mid-run with a checkpoint")
    kill_9(first)
    killed_at = cluster.client.get(f"/v1/jobs/{job_id}").json()
    assert killed_at["status"] == "running" and killed_at["progress"]["fraction"] < 1

    _, second_log = processes.worker()
    job = wait_until(cluster, job_id, "succeeded")
    assert {run["status"] for run in job["runs"]} == {"succeeded"}
    assert_same_series(series(cluster.database_url, job_id), reference)
    # The new worker went on from the checkpoint (not from step 0), as its log says.
    steps = resumed_from(second_log)
    assert steps and min(steps) > 0, second_log.read_text()[-3000:]


def test_sigterm_stops_at_the_next_flush_and_the_next_worker_goes_on(
    processes: Processes, reference: dict[str, list[tuple[int, float, float]]]
) -> None:
    cluster = processes.cluster
    first, first_log = processes.worker()
    job_id = submit(cluster)
    cluster.wait_for(
        lambda: (
            (cluster.client.get(f"/v1/jobs/{job_id}").json()["progress"]["fraction"] or 0) > 0.2
        ),
        120,
        "the job mid-run",
    )
    asked = time.monotonic()
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=60)
    stopped_in = time.monotonic() - asked
    progress = cluster.client.get(f"/v1/jobs/{job_id}").json()["progress"]
    assert progress["fraction"] < 1, "the worker finished the job instead of stopping"
    assert "sent back" in first_log.read_text()

    _, second_log = processes.worker()
    wait_until(cluster, job_id, "succeeded")
    assert_same_series(series(cluster.database_url, job_id), reference)
    steps = resumed_from(second_log)
    assert steps and min(steps) > 0
    print(f"SIGTERM to exit: {stopped_in:.1f} s")

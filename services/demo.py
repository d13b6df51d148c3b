"""``optbench demo``: the whole service on the embedded default, in one command.

Starts the API and one Celery worker as child processes (the same commands a cluster runs),
submits the lecture's comparison over HTTP, shows progress while it trains and prints the
per-optimizer table. Results stay in the embedded database: ``optbench api`` serves them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx

from services.console import ProgressLine, summary_table
from services.spec import LECTURE_SPEC

FINISHED = ("succeeded", "failed", "cancelled")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _child(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A child process of ``optbench ...``, stopped when the block ends."""
    command = [sys.executable, "-m", "services.cli", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_until_up(client: httpx.Client, api: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited with status {api.returncode}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not become ready in time")


def run_demo(epochs: int = 10) -> int:
    from services.db.migrate import upgrade

    upgrade()
    port = _free_port()
    spec: dict[str, Any] = {**LECTURE_SPEC, "epochs": epochs}
    with ExitStack() as stack:
        print("starting the API and one worker (embedded default: SQLite + filesystem broker)")
        api = stack.enter_context(_child("api", "--port", str(port), "--log-level", "warning"))
        stack.enter_context(_child("worker", "--log-level", "WARNING"))
        client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30))
        _wait_until_up(client, api)
        response = client.post("/v1/jobs", json=spec)
        response.raise_for_status()
        job = response.json()
        print(f"submitted job {job['id']}: {job['name']} ({len(job['runs'])} runs)")
        progress = ProgressLine(every_seconds=2.0)
        while job["status"] not in FINISHED:
            time.sleep(0.5)
            job = client.get(f"/v1/jobs/{job['id']}").json()
            done = job["status"] in FINISHED
            progress.update(
                job["progress"]["steps_done"],
                job["progress"]["total_steps"],
                job["status"],
                force=done,
            )
        progress.close()
        summary = client.get(f"/v1/jobs/{job['id']}/summary").json()
    print(f"job {job['id']}: {job['status']}" + (f" ({job['error']})" if job["error"] else ""))
    print(summary_table(summary))
    print(f"\nSeries: `optbench api`, then GET http://127.0.0.1:8000/v1/jobs/{job['id']}/metrics")
    return 0 if job["status"] == "succeeded" else 1

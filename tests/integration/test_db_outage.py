"""Database trouble: the real ``optbench api`` reaches PostgreSQL through a TCP proxy the test
controls. While the proxy refuses connections the API answers 503 with Retry-After (never a
500, never the database's address or password); once it forwards again the API answers 200,
without a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from tests.integration.faults_support import TcpProxy
from tests.support import free_port

PASSWORD = "not-a-real-password-4711"  # trust authentication never asks for it


@pytest.fixture
def proxied_api(postgres_url: str, tmp_path: Path) -> Iterator[tuple[httpx.Client, TcpProxy, Path]]:
    real = make_url(postgres_url)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432))
    proxy.forward()
    through = real.set(port=proxy.port, password=PASSWORD).render_as_string(hide_password=False)
    port = free_port()
    log = tmp_path / "api.log"
    environment = {
        **os.environ,
        "OPTBENCH_DATABASE_URL": through,
        "OPTBENCH_HOME": str(tmp_path / "home"),
        "OPTBENCH_RETRY_AFTER_SECONDS": "7",
        "OPTBENCH_AUTH": "loopback",  # keyless from loopback (PostgreSQL's default: required)
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api", "--port", str(port)],
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200, 60, "the API", log)
        yield client, proxy, log
        assert process.poll() is None, "the API process exited"
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        proxy.refuse()


def wait_for(predicate: object, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}\n{log.read_text()[-3000:]}")


SPEC = {
    "name": "during an outage",
    "dataset": {"name": "iris"},
    "model": {"name": "linear"},
    "optimizers": [{"name": "sgd"}],
    "epochs": 1,
}


def test_503_with_retry_after_while_the_database_is_away_then_200_again(
    proxied_api: tuple[httpx.Client, TcpProxy, Path],
) -> None:
    client, proxy, log = proxied_api
    assert client.get("/v1/jobs").status_code == 200  # pooled connections now exist

    proxy.refuse()
    for method, path, body in [
        ("GET", "/v1/jobs", None),  # a pooled connection, cut: pre-ping finds it dead
        ("GET", "/v1/jobs", None),  # a new connection, refused
        ("POST", "/v1/jobs", SPEC),
        ("GET", "/v1/datasets", None),
        ("GET", "/readyz", None),
    ]:
        response = client.request(method, path, json=body)
        assert response.status_code == 503, (method, path, response.text)
        assert response.headers["retry-after"] == "7"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Temporarily unavailable"
        for secret in (PASSWORD, str(proxy.port), "postgres"):
            assert secret not in response.text

    proxy.forward()  # the database is back: no restart
    wait_for(lambda: client.get("/v1/jobs").status_code == 200, 15, "recovery", log)
    assert client.get("/readyz").status_code == 200
    assert client.post("/v1/jobs", json=SPEC).status_code == 202

    text = log.read_text()
    assert PASSWORD not in text
    assert " 500 " not in text and "Traceback" not in text

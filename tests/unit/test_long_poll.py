"""``GET /v1/jobs/{id}?wait=SECONDS`` (services/job_watch.py): it answers as soon as the job
changes, or with its current state once the wait is over; only the job's owner gets it; and
``ApiClient.wait`` uses it without sleeping between requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from services.api.app import create_app
from services.client import ApiClient
from services.db import store
from services.db.models import Run
from services.db.session import unit_of_work
from services.spec import JobSpec
from tests.support import local_client
from tests.unit.test_execution import SPEC, stored_job


@pytest.fixture
def client(embedded_home: Path) -> Iterator[TestClient]:
    with local_client(create_app()) as client:
        yield client


def timed_get(client: TestClient, path: str, **params: Any) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = client.get(path, params=params)
    return response, time.monotonic() - began


def test_it_answers_as_soon_as_the_progress_changes(client: TestClient) -> None:
    job_id = stored_job()
    with unit_of_work() as session:
        first_run = store.get_job(session, job_id).runs[0].id

    def progress_later() -> None:
        time.sleep(0.3)
        with unit_of_work() as session:
            session.execute(update(Run).where(Run.id == first_run).values(steps_done=3))

    writer = threading.Thread(target=progress_later)
    writer.start()
    response, seconds = timed_get(client, f"/v1/jobs/{job_id}", wait=30)
    writer.join()
    assert response.status_code == 200, response.text
    assert response.json()["progress"]["steps_done"] == 3
    assert 0.25 < seconds < 15  # after the change, long before the 30 s (a loaded machine)


def test_it_answers_with_the_current_state_when_the_wait_is_over(client: TestClient) -> None:
    job_id = stored_job()
    response, seconds = timed_get(client, f"/v1/jobs/{job_id}", wait=0.4)
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert response.json()["progress"]["steps_done"] == 0
    assert 0.4 <= seconds < 3


def test_a_finished_job_is_answered_at_once(client: TestClient) -> None:
    job_id = stored_job()
    with unit_of_work() as session:
        store.finish_job(session, store.get_job(session, job_id).id, error="stopped by a test")
    response, seconds = timed_get(client, f"/v1/jobs/{job_id}", wait=10)
    assert response.json()["status"] == "failed"
    assert seconds < 2


def test_another_owners_job_is_not_found_at_once(client: TestClient) -> None:
    with unit_of_work() as session:
        theirs = store.create_job(session, JobSpec.model_validate(SPEC), owner="someone-else")
        job_id = str(theirs.id)
    response, seconds = timed_get(client, f"/v1/jobs/{job_id}", wait=10)
    assert response.status_code == 404
    assert seconds < 2  # no waiting on a job the caller may not see


def test_the_wait_is_bounded(client: TestClient) -> None:
    job_id = stored_job()
    response = client.get(f"/v1/jobs/{job_id}", params={"wait": 3600})
    assert response.status_code == 422
    assert "wait" in response.text


# --- the client ------------------------------------------------------------------------------


def scripted_client(states: list[dict[str, Any]], seen: list[httpx.Request]) -> ApiClient:
    """An ApiClient whose API answers ``states`` one after another."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=states[min(len(seen), len(states)) - 1])

    api = ApiClient("http://api.test")
    api.http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(answer))
    return api


def state(status: str, done: int) -> dict[str, Any]:
    return {"status": status, "runs": [{"status": status, "steps_done": done}]}


def test_the_client_long_polls_without_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    seen: list[httpx.Request] = []
    api = scripted_client([state("queued", 0), state("running", 5), state("succeeded", 9)], seen)
    updates: list[str] = []
    job = api.wait("j", lambda s: updates.append(s["status"]))
    assert job["status"] == "succeeded" and updates == ["queued", "running", "succeeded"]
    assert all(request.url.params["wait"] == "10.0" for request in seen)
    assert sleeps == []  # every answer was a change: asked again at once


def test_an_api_without_long_polls_is_polled_at_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    seen: list[httpx.Request] = []
    same = state("running", 5)
    api = scripted_client([same, same, same, state("succeeded", 9)], seen)
    api.wait("j", lambda s: None, interval=0.5)
    assert sleeps == [0.5, 0.5]  # early answers without a change: paced, not a busy loop

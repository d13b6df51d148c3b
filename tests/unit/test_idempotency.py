"""Idempotency-Key on POST /v1/jobs: one job per owner and key, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from services import auth, jobs
from services.api.app import create_app
from services.db import store
from services.db.models import Job
from services.db.session import unit_of_work
from services.queue import reset_client
from services.settings import get_settings
from services.spec import JobSpec
from tests.support import local_client

SPEC = {
    "name": "idempotent",
    "dataset": {"name": "iris"},
    "model": {"name": "linear"},
    "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam"}],
    "epochs": 1,
}


@pytest.fixture
def client(database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    if database == "postgresql":  # the filesystem broker in a temporary home, not the user's
        monkeypatch.setenv("OPTBENCH_HOME", str(tmp_path / "home"))
        get_settings.cache_clear()
        reset_client()
    with local_client(create_app()) as client:
        yield client


def job_count() -> int:
    with unit_of_work() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def messages() -> int:
    folder = get_settings().broker_folder / "queue"
    return len(list(folder.iterdir())) if folder.exists() else 0


def test_same_key_twice_is_one_job(client: TestClient) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = client.post("/v1/jobs", json=SPEC, headers=key)
    assert first.status_code == 202, first.text
    # The same spec, other spacing and key order: the same request.
    body = json.dumps(dict(reversed(list(SPEC.items()))), indent=2)
    again = client.post(
        "/v1/jobs", content=body, headers={**key, "content-type": "application/json"}
    )
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert job_count() == 1
    assert messages() == 1  # sent once, by the request that created it


def test_same_key_other_body_is_refused(client: TestClient) -> None:
    key = {"Idempotency-Key": "order-17"}
    first = client.post("/v1/jobs", json=SPEC, headers=key)
    other = copy.deepcopy(SPEC)
    other["epochs"] = 2
    response = client.post("/v1/jobs", json=other, headers=key)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/idempotency-key-reused")
    assert "used for another request" in problem["detail"]
    assert problem["job_id"] == first.json()["id"]
    assert job_count() == 1


def test_without_a_key_every_request_is_a_job(client: TestClient) -> None:
    assert client.post("/v1/jobs", json=SPEC).status_code == 202
    assert client.post("/v1/jobs", json=SPEC).status_code == 202
    assert job_count() == 2


def test_keys_are_per_owner(client: TestClient) -> None:
    key = "shared-key"
    alice = auth.create_key("alice").token
    mine = client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": key})
    hers = client.post(
        "/v1/jobs",
        json=SPEC,
        headers={"Idempotency-Key": key, "Authorization": f"Bearer {alice}"},
    )
    assert mine.status_code == hers.status_code == 202
    assert mine.json()["id"] != hers.json()["id"]


def test_a_repeat_is_not_counted_against_the_in_flight_limit(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTBENCH_MAX_JOBS_IN_FLIGHT", "1")
    get_settings.cache_clear()
    key = {"Idempotency-Key": "once"}
    assert client.post("/v1/jobs", json=SPEC, headers=key).status_code == 202
    # One job is in flight, the limit: a new job would be a 429 (tests/unit/test_limits.py).
    assert client.post("/v1/jobs", json=SPEC, headers=key).status_code == 200


@pytest.mark.parametrize("key", ["", "x" * 201, "with space", "tab\there"])
def test_a_malformed_key_is_a_422(client: TestClient, key: str) -> None:
    response = client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": key})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert job_count() == 0


def test_the_unique_index_decides(database: str) -> None:
    spec = JobSpec.model_validate(SPEC)
    with unit_of_work() as session:
        store.create_keyed_job(session, spec, "bob", key="k", request_sha256="a", enqueued_at=None)
    with pytest.raises(IntegrityError), unit_of_work() as session:
        store.create_keyed_job(session, spec, "bob", key="k", request_sha256="a", enqueued_at=None)
    with unit_of_work() as session:  # another owner, or no key: no conflict
        store.create_keyed_job(session, spec, "eve", key="k", request_sha256="a", enqueued_at=None)
        store.create_keyed_job(
            session, spec, "bob", key=None, request_sha256=None, enqueued_at=None
        )
        store.create_keyed_job(
            session, spec, "bob", key=None, request_sha256=None, enqueued_at=None
        )
    assert job_count() == 4


def test_a_request_that_loses_at_the_index_answers_with_the_winner(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should two requests get past the owner's lock together, the second one's insert fails
    on the unique index and it answers with the first one's job."""
    spec = JobSpec.model_validate(SPEC)
    winner = jobs.submit(spec, lambda _: None, owner="carol", idempotency_key="k")
    found = store.find_keyed_job
    calls: list[int] = []

    def not_yet(*args: object) -> Job | None:  # the loser's look happened before the commit
        calls.append(1)
        return None if len(calls) == 1 else found(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "find_keyed_job", not_yet)
    loser = jobs.submit(spec, lambda _: None, owner="carol", idempotency_key="k")
    assert not loser.created and loser.job.id == winner.job.id
    assert job_count() == 1


@pytest.mark.usefixtures("postgres_db")
def test_two_requests_at_once_make_one_job() -> None:
    """Two threads, two connections, the same key at the same moment on PostgreSQL."""
    spec = JobSpec.model_validate(SPEC)
    barrier = threading.Barrier(8)
    results: list[jobs.Submitted] = []
    errors: list[BaseException] = []

    def submit() -> None:
        barrier.wait()
        try:
            results.append(jobs.submit(spec, lambda _: None, owner="dave", idempotency_key="k"))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(result.created for result in results) == 1
    assert len({result.job.id for result in results}) == 1
    assert job_count() == 1

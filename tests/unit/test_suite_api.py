"""/v1/suites on the embedded default, without workers: submission stores one queued study
per workload and study and enqueues each once; validation names the field; the suite counts
as one job in flight; status follows the jobs; scores of a suite nothing has trained yet."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.db import store
from services.db.session import unit_of_work
from services.spec.suite import LECTURE_SUITE, shrunk
from tests.support import local_client

SMALL = shrunk(LECTURE_SUITE, epochs=1, trials=1, rerun_seeds=1, studies=2)


@pytest.fixture
def client(embedded_home: Path) -> Iterator[TestClient]:
    with local_client(create_app()) as client:
        yield client


def queued_messages(home: Path) -> int:
    folder = home / "broker" / "queue"
    return len(list(folder.iterdir())) if folder.exists() else 0


def test_a_preset_submission_stores_and_enqueues_one_study_per_workload_and_study(
    client: TestClient, embedded_home: Path
) -> None:
    response = client.post("/v1/suites", json={"preset": "lecture"})
    assert response.status_code == 202, response.text
    suite = response.json()
    assert response.headers["location"] == f"/v1/suites/{suite['id']}"
    assert suite["status"] == "queued"
    names = [w["name"] for w in LECTURE_SUITE["workloads"]] * LECTURE_SUITE["studies"]
    assert [(job["workload"], job["study"]) for job in suite["jobs"]] == sorted(
        (name, study) for name in set(names) for study in range(LECTURE_SUITE["studies"])
    )
    assert queued_messages(embedded_home) == len(names)
    child = client.get(f"/v1/jobs/{suite['jobs'][0]['job_id']}").json()
    assert child["spec"]["tuning"]["trials"] == LECTURE_SUITE["tuning"]["trials"]
    assert client.get("/v1/suites").json()["total"] == 1
    # nothing trained yet: every t is a miss, every score 0, the document complete
    scores = client.get(f"/v1/suites/{suite['id']}/scores").json()
    assert scores["status"] == "queued" and scores["reference"] == "adam"
    assert all(cell["t"] is None for cell in scores["cells"])
    assert {row["score"] for row in scores["table"]} == {0.0}
    assert client.get(f"/v1/suites/{suite['id']}/report").status_code == 200
    # a queued suite cannot be deleted; cancelled, it can, with its jobs
    assert client.delete(f"/v1/suites/{suite['id']}").status_code == 409
    cancelled = client.post(f"/v1/suites/{suite['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    deleted = client.delete(f"/v1/suites/{suite['id']}").json()
    assert deleted["jobs"] == len(names) and deleted["deleted"]["runs"] > 0
    assert client.get(f"/v1/jobs/{suite['jobs'][0]['job_id']}").status_code == 404


def test_bad_suites_are_problems_naming_what_to_change(client: TestClient) -> None:
    response = client.post("/v1/suites", json={"preset": "lectur"})
    assert response.status_code == 422
    assert "'lectur' is not a suite preset; use one of lecture" in response.json()["detail"]
    spec = copy.deepcopy(SMALL)
    spec["workloads"][0]["target"] = {"metric": "distance", "value": 0.1}
    detail = client.post("/v1/suites", json=spec).json()["detail"]
    assert "workloads[0] (digits-mlp): target.metric: 'distance' does not fit" in detail
    spec = copy.deepcopy(SMALL)
    spec["workloads"][0]["epochs"] = 10_000
    spec["workloads"][0]["batch_size"] = 1
    response = client.post("/v1/suites", json=spec)
    problem = response.json()
    assert response.status_code == 422 and problem["type"].endswith("/limit-exceeded"), problem
    assert problem["detail"].startswith("workloads[0] (digits-mlp): epochs: ")  # a child's
    assert problem["errors"][0]["field"] == "workloads[0].epochs"
    assert client.get("/v1/suites").json()["total"] == 0  # nothing stored


def test_a_suite_counts_as_one_job_in_flight_and_follows_its_jobs(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTBENCH_MAX_JOBS_IN_FLIGHT", "2")
    from services.settings import get_settings

    get_settings.cache_clear()
    try:
        suite = client.post("/v1/suites", json=SMALL).json()
        assert len(suite["jobs"]) == 2 * len(SMALL["workloads"])  # 12 jobs, one in flight
        assert client.post("/v1/suites", json=SMALL).status_code == 202
        assert client.post("/v1/suites", json=SMALL).status_code == 429
    finally:
        get_settings.cache_clear()
    with unit_of_work() as session:
        first = store.get_job(session, suite["jobs"][0]["job_id"], with_runs=False)
        first.status = "running"
    assert client.get(f"/v1/suites/{suite['id']}").json()["status"] == "running"
    with unit_of_work() as session:
        for job in suite["jobs"]:
            store.get_job(session, job["job_id"], with_runs=False).status = "succeeded"
        store.get_job(session, suite["jobs"][1]["job_id"], with_runs=False).status = "failed"
    assert client.get(f"/v1/suites/{suite['id']}").json()["status"] == "failed"


def test_an_idempotency_key_answers_with_the_suite_it_created(
    client: TestClient, embedded_home: Path
) -> None:
    headers = {"Idempotency-Key": "suite-1"}
    first = client.post("/v1/suites", json=SMALL, headers=headers)
    again = client.post("/v1/suites", json=SMALL, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert queued_messages(embedded_home) == len(first.json()["jobs"])  # sent once
    other = client.post("/v1/suites", json={**SMALL, "name": "another"}, headers=headers)
    assert other.status_code == 422 and "a different spec" in other.json()["detail"]
    assert client.get("/v1/suites").json()["total"] == 1

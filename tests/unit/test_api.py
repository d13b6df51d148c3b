"""The HTTP API on the embedded default (SQLite + filesystem broker), in-process."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.spec import CATALOG, LECTURE_SPEC
from tests.support import local_client


@pytest.fixture
def client(embedded_home: Path) -> Iterator[TestClient]:
    with local_client(create_app()) as client:
        yield client


def queued_messages(home: Path) -> int:
    folder = home / "broker" / "queue"
    return len(list(folder.iterdir())) if folder.exists() else 0


def test_submit_returns_202_with_location_and_queued_runs(
    client: TestClient, embedded_home: Path
) -> None:
    response = client.post("/v1/jobs", json=LECTURE_SPEC)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert [run["label"] for run in job["runs"]] == [o["name"] for o in LECTURE_SPEC["optimizers"]]
    assert job["runs"][3]["hyperparameters"]["nesterov"] is True
    assert queued_messages(embedded_home) == 1  # enqueued once, after the commit

    fetched = client.get(f"/v1/jobs/{job['id']}").json()
    assert fetched["progress"] == {"steps_done": 0, "total_steps": None, "fraction": None}
    listing = client.get("/v1/jobs", params={"status": "queued"}).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == job["id"]


def test_bad_spec_is_a_problem_naming_the_field(client: TestClient, embedded_home: Path) -> None:
    spec = copy.deepcopy(LECTURE_SPEC)
    spec["optimizers"][4] = {"name": "adagrd"}
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["field"] == "optimizers[4].name"
    assert "adagrad" in problem["errors"][0]["message"]
    assert problem["detail"].startswith("optimizers[4].name:")
    # nothing was stored or enqueued
    assert client.get("/v1/jobs").json()["total"] == 0
    assert queued_messages(embedded_home) == 0
    metrics = client.get("/metrics").text
    assert 'optbench_jobs_rejected_total{reason="invalid_spec"} 1.0' in metrics


def test_malformed_json_is_a_problem_too(client: TestClient) -> None:
    response = client.post(
        "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_unknown_job_is_a_404_problem(client: TestClient) -> None:
    response = client.get(f"/v1/jobs/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith("no job with id")


def test_metrics_of_a_queued_job_are_empty_columns(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=LECTURE_SPEC).json()
    body = client.get(f"/v1/jobs/{job['id']}/metrics", params={"granularity": "epoch"}).json()
    assert len(body["runs"]) == 8
    assert body["runs"][0]["series"]["val_accuracy"] == []
    assert (
        client.get(f"/v1/jobs/{job['id']}/metrics", params={"granularity": "week"}).status_code
        == 422
    )


def test_catalog_lists_every_optimizer_with_parameters(client: TestClient) -> None:
    catalog = client.get("/v1/catalog").json()
    names = [entry["name"] for entry in catalog["optimizers"]]
    assert names == list(CATALOG)
    adam = next(entry for entry in catalog["optimizers"] if entry["name"] == "adam")
    assert adam["parameters"]["lr"]["default"] == 0.001
    tasks = {d["name"]: d["task"] for d in catalog["datasets"]}
    assert tasks["digits"] == "classification" and tasks["rosenbrock"] == "landscape"
    assert {s["name"] for s in catalog["schedules"]} >= {"cosine", "onecycle", "plateau"}
    assert "sparseadam" in catalog["refused_optimizers"]


def test_health_readiness_metrics_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.post("/v1/jobs", json=LECTURE_SPEC)
    assert "optbench_jobs_submitted_total" in client.get("/metrics").text
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert "lecture" in body["examples"]
    assert "Optimizer_nag" in schema["components"]["schemas"]

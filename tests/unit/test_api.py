"""The HTTP API on the embedded default (SQLite + filesystem broker), in-process."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.api.errors import Problem
from services.api.schemas import MAX_QUERY_INT, CatalogOut
from services.catalog import catalog
from services.db.metric_queries import encode_cursor
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
    # The counter is the process's: other tests in this process may have counted rejections.
    rejected_before = rejected_invalid_specs(client.get("/metrics").text)
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
    assert rejected_invalid_specs(client.get("/metrics").text) == rejected_before + 1


def rejected_invalid_specs(metrics: str) -> float:
    """optbench_jobs_rejected_total{reason="invalid_spec"} as /metrics exposes it (0: none yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "optbench_jobs_rejected_total"
        and sample.labels.get("reason") == "invalid_spec"
    )


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


def test_the_catalog_model_keeps_every_key() -> None:
    # GET /v1/catalog answers through CatalogOut, which drops the keys it does not name.
    assert CatalogOut.model_validate(catalog()).model_dump() == catalog()


# What a generated client names its functions (openapi-python-client, openapi-generator).
OPERATION_IDS = {
    ("POST", "/v1/jobs"): "submitJob",
    ("GET", "/v1/jobs"): "listJobs",
    ("GET", "/v1/jobs/{job_id}"): "getJob",
    ("POST", "/v1/jobs/{job_id}/cancel"): "cancelJob",
    ("DELETE", "/v1/jobs/{job_id}"): "deleteJob",
    ("GET", "/v1/jobs/{job_id}/summary"): "getSummary",
    ("GET", "/v1/jobs/{job_id}/metrics"): "getMetrics",
    ("GET", "/v1/jobs/{job_id}/trials"): "listTrials",
    ("GET", "/v1/jobs/{job_id}/report"): "getReport",
    ("GET", "/v1/jobs/{job_id}/charts"): "getChartData",
    ("POST", "/v1/datasets"): "uploadDataset",
    ("GET", "/v1/datasets"): "listDatasets",
    ("GET", "/v1/datasets/{dataset_id}"): "getDataset",
    ("DELETE", "/v1/datasets/{dataset_id}"): "deleteDataset",
    ("GET", "/v1/compare"): "compareJobs",
    ("GET", "/v1/optimizers/{label}/history"): "getOptimizerHistory",
    ("GET", "/v1/catalog"): "getCatalog",
    ("GET", "/v1/presets"): "getPresets",
    ("POST", "/v1/suites"): "submitSuite",
    ("GET", "/v1/suites"): "listSuites",
    ("GET", "/v1/suites/presets"): "listSuitePresets",
    ("GET", "/v1/suites/{suite_id}"): "getSuite",
    ("GET", "/v1/suites/{suite_id}/scores"): "getSuiteScores",
    ("GET", "/v1/suites/{suite_id}/report"): "getSuiteReport",
    ("POST", "/v1/suites/{suite_id}/cancel"): "cancelSuite",
    ("DELETE", "/v1/suites/{suite_id}"): "deleteSuite",
    ("GET", "/metrics"): "getPrometheusMetrics",
    ("GET", "/healthz"): "getHealth",
    ("GET", "/readyz"): "getReadiness",
}


def test_every_operation_has_a_camel_case_operation_id_named_for_what_it_does(
    client: TestClient,
) -> None:
    schema = client.get("/openapi.json").json()
    found = {
        (method.upper(), path): operation.get("operationId")
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }
    assert found == OPERATION_IDS
    assert len(set(found.values())) == len(found)
    for operation_id in found.values():
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", operation_id), operation_id
        assert "_v1_" not in operation_id
    components = schema["components"]["schemas"]
    summary = schema["paths"]["/v1/jobs/{job_id}/summary"]["get"]["responses"]["200"]
    assert summary["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SummaryOut"
    }
    assert "paired" in components["OptimizerSummary"]["properties"]
    assert "CatalogOut" in components


def test_the_summary_of_a_queued_job_validates_against_its_model(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=LECTURE_SPEC).json()
    response = client.get(f"/v1/jobs/{job['id']}/summary")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "classification" and body["best"] is not None
    assert [row["label"] for row in body["optimizers"]] == [
        o["name"] for o in LECTURE_SPEC["optimizers"]
    ]
    assert set(body["optimizers"][0]) >= {"stats", "paired", "rank", "target_reached"}


def _stored_job(name: str, dataset: dict[str, Any], model: dict[str, Any]) -> str:
    """A job row stored directly (no broker: the list reads only the database)."""
    from services.db import store
    from services.db.session import unit_of_work
    from services.spec import JobSpec

    spec = JobSpec.model_validate(
        {"name": name, "dataset": dataset, "model": model, "optimizers": [{"name": "adam"}]}
    )
    with unit_of_work() as session:
        return str(store.create_job(session, spec).id)


def test_the_job_list_filters_by_name_data_set_and_model_in_sql(database: str) -> None:
    """On SQLite and PostgreSQL alike: the filters combine, the name is a case-insensitive
    substring with LIKE's wildcards taken literally, and ``total`` counts the filtered jobs."""
    from services.db import store
    from services.db.session import unit_of_work

    mlp = {"name": "mlp", "hidden": [8]}
    lecture = _stored_job("Lecture on digits", {"name": "digits"}, mlp)
    iris = _stored_job("the lecture, iris", {"name": "iris"}, mlp)
    _stored_job("valley", {"name": "rosenbrock"}, {"name": "point"})
    linear = _stored_job("100%_linear", {"name": "digits"}, {"name": "linear"})
    with local_client(create_app()) as client:

        def ids(**params: str) -> list[str]:
            page = client.get("/v1/jobs", params=params).json()
            assert page["total"] == len(page["items"]), page
            return sorted(job["id"] for job in page["items"])

        assert ids(name="LECTURE") == sorted([lecture, iris])
        assert ids(dataset="digits") == sorted([lecture, linear])
        assert ids(dataset="digits", model="mlp") == [lecture]
        assert ids(name="lecture", dataset="iris") == [iris]
        assert ids(name="%") == [linear] and ids(name="%_l") == [linear]
        assert ids(name="0_l") == []  # "_" is no wildcard
        assert ids(name="lecture", status="running") == []
        assert len(ids()) == 4

        for field, value in (("dataset", "digitz"), ("model", "transformer")):
            response = client.get("/v1/jobs", params={field: value})
            assert response.status_code == 422, response.text
            error = response.json()["errors"][0]
            assert error["field"] == field and "use one of" in error["message"], error

        # best_label: null until the job finishes, then the stored summary's rank-1 label.
        assert {job["best_label"] for job in client.get("/v1/jobs").json()["items"]} == {None}
        with unit_of_work() as session:
            store.finish_job(session, uuid.UUID(lecture), summary={"best": "adam"})
        listed = {job["id"]: job["best_label"] for job in client.get("/v1/jobs").json()["items"]}
        assert listed[lecture] == "adam" and listed[iris] is None
        assert client.get(f"/v1/jobs/{lecture}").json()["best_label"] == "adam"


def test_health_readiness_metrics_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.post("/v1/jobs", json=LECTURE_SPEC)
    assert "optbench_jobs_submitted_total" in client.get("/metrics").text
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert "lecture" in body["examples"]
    assert "Optimizer_nag" in schema["components"]["schemas"]


# --- what schema fuzzing (tests/integration/test_schema_fuzz.py) found -----------------------


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/datasets"])
def test_an_offset_past_the_database_s_integers_is_a_422_not_a_500(
    client: TestClient, path: str
) -> None:
    # PostgreSQL refused OFFSET 182569019919395870212096 (bigint out of range): a 500.
    assert client.get(path, params={"offset": MAX_QUERY_INT}).json()["items"] == []
    for offset in (MAX_QUERY_INT + 1, 182569019919395870212096):
        response = client.get(path, params={"offset": offset})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == "query.offset"


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_step_past_the_database_s_integers_is_a_422_before_any_row(
    client: TestClient, fmt: str
) -> None:
    # to_step=42095865931837046784 made PostgreSQL refuse the query: a 500 as JSON, and as
    # CSV a connection dropped after the 200 had started.
    job = client.post("/v1/jobs", json=LECTURE_SPEC).json()
    url = f"/v1/jobs/{job['id']}/metrics"
    ok = client.get(url, params={"to_step": MAX_QUERY_INT, "format": fmt})
    assert ok.status_code == 200, ok.text
    for name in ("from_step", "to_step"):
        response = client.get(url, params={name: 42095865931837046784, "format": fmt})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == f"query.{name}"


def test_a_cursor_with_numbers_past_the_database_s_is_not_one_this_api_returned(
    client: TestClient,
) -> None:
    job = client.post("/v1/jobs", json=LECTURE_SPEC).json()
    url = f"/v1/jobs/{job['id']}/metrics"
    assert client.get(url, params={"cursor": encode_cursor("step", 1, 5)}).status_code == 200
    for run_id, step in ((2**63, 5), (1, 2**31), (1, -1)):
        response = client.get(url, params={"cursor": encode_cursor("step", run_id, step)})
        assert response.status_code == 422, (run_id, step, response.text)
        assert response.json()["errors"][0]["field"] == "cursor"


def test_fastapi_s_own_errors_are_problems_too(client: TestClient) -> None:
    # A body that is not UTF-8 (400), a path no route serves (404), a method a route does
    # not take (405): {"detail": ...} as application/json before, undocumented.
    unparsable = client.post(
        "/v1/jobs", content=b"0\xf3\x0f", headers={"content-type": "application/json"}
    )
    no_route = client.get("/v1/nothing-here")
    no_method = client.delete("/v1/jobs")
    for response, status in ((unparsable, 400), (no_route, 404), (no_method, 405)):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        Problem.model_validate(response.json())
        assert response.json()["status"] == status
    assert unparsable.json()["detail"] == "There was an error parsing the body"
    assert no_method.json()["type"].endswith("/method-not-allowed")
    assert no_method.headers["allow"] == "POST"
    bad_form = client.post(
        "/v1/datasets",
        content=b"--b\r\n\xf2\x86--b--\r\n",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert bad_form.status_code == 400
    assert bad_form.headers["content-type"] == "application/problem+json"


def test_openapi_documents_every_error_the_api_sends_as_a_problem(client: TestClient) -> None:
    """Schemathesis's status code and content type checks found 401, 404, 409 and 400
    undocumented, and every 422 documented as FastAPI's application/json HTTPValidationError
    while the API sends application/problem+json."""
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    problem_schema = schema["components"]["schemas"]["Problem"]
    assert set(problem_schema["required"]) == {"type", "title", "status", "detail"}
    documented: dict[tuple[str, str], set[str]] = {}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            documented[method.upper(), path] = set(responses)
            for status, response in responses.items():
                if status[0] in "45":
                    assert response["content"] == {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    }, (method, path, status)
            if path.startswith("/v1"):
                assert {"401", "503"} <= set(responses), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if "requestBody" in operation:
                assert "400" in responses, (method, path)
    assert "409" in documented["POST", "/v1/jobs/{job_id}/cancel"]
    assert {"200", "404", "409"} <= documented["DELETE", "/v1/jobs/{job_id}"]
    assert {"200", "404", "409"} <= documented["DELETE", "/v1/datasets/{dataset_id}"]
    assert {"413", "429"} <= documented["POST", "/v1/datasets"]
    deleted = schema["paths"]["/v1/jobs/{job_id}"]["delete"]["responses"]["200"]["content"]
    assert deleted["application/json"]["schema"] == {"$ref": "#/components/schemas/JobDeleted"}
    assert {"200", "202", "413", "422", "429"} <= documented["POST", "/v1/jobs"]
    replay = schema["paths"]["/v1/jobs"]["post"]["responses"]["200"]["content"]
    assert replay["application/json"]["schema"] == {"$ref": "#/components/schemas/JobOut"}
    assert "503" in documented["GET", "/readyz"]
    # and what the API sends for those statuses fits the documented schema
    for response in (
        client.get(f"/v1/jobs/{uuid.uuid4()}"),
        client.get("/v1/jobs", params={"limit": 0}),
    ):
        assert response.headers["content-type"] == "application/problem+json"
        Problem.model_validate(response.json())


def test_the_client_sends_only_the_job_filters_it_is_given() -> None:
    import httpx

    from services.client import ApiClient

    seen: list[httpx.QueryParams] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params)
        return httpx.Response(200, json={"items": [], "total": 0, "limit": 5, "offset": 0})

    with ApiClient("http://optbench.invalid") as client:
        client.http = httpx.Client(base_url=client.base_url, transport=httpx.MockTransport(answer))
        client.jobs(limit=5, name="lecture", dataset="digits")
        client.jobs(status="running", model="mlp")
    assert dict(seen[0]) == {"limit": "5", "offset": "0", "name": "lecture", "dataset": "digits"}
    assert dict(seen[1]) == {"limit": "50", "offset": "0", "status": "running", "model": "mlp"}

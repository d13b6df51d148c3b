"""Bad input is a 422 naming the field, never a 5xx (issue 16, problem 3), on SQLite and on
PostgreSQL (which refuses NUL in text: what used to turn a job name into a 500); and an
error the API did not expect is logged with the request id and the error class only."""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError, IntegrityError

from services.api.app import create_app
from services.db.metric_queries import decode_cursor, encode_cursor
from services.errors import InvalidSpec
from services.spec import LECTURE_SPEC, JobSpec
from tests.support import local_client
from tests.unit.test_metric_queries import make_job

PROBLEM = "application/problem+json"
# The characters refused in every string field: C0 controls (NUL first), DEL, C1 controls.
CONTROL = ["\x00", "\x07", "\n", "\x1b", "\x7f", "\x85"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    request.getfixturevalue("embedded_home" if request.param == "sqlite" else "postgres_db")
    with local_client(create_app()) as client:
        yield client


def problem_fields(response: httpx.Response, status: int = 422) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    return {e["field"]: e["message"] for e in response.json().get("errors", [])}


def spec(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(LECTURE_SPEC)
    body.update(epochs=1, **changes)
    return body


@pytest.mark.parametrize("char", CONTROL)
def test_a_control_character_in_the_job_name_is_a_422_naming_it(
    client: TestClient, char: str
) -> None:
    response = client.post("/v1/jobs", json=spec(name=f"my{char}job"))
    fields = problem_fields(response)
    assert "control character" in fields["name"], fields
    assert f"U+{ord(char):04X}" in fields["name"]
    assert client.get("/v1/jobs").json()["total"] == 0


def test_a_lone_surrogate_in_the_job_name_is_a_422(client: TestClient) -> None:
    body = json.dumps(spec(name="PLACEHOLDER")).replace("PLACEHOLDER", "a\\ud800b")
    response = client.post(
        "/v1/jobs", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert "name" in problem_fields(response)  # (pydantic's str already refused these)


def test_every_string_of_the_spec_is_checked_where_it_is() -> None:
    # The check sits on the spec's base model, so every model has it, however built.
    from services.spec.base import StrictModel

    class Nested(StrictModel):
        note: str
        tags: list[str] = []

    class Outer(StrictModel):
        inner: Nested

    with pytest.raises(ValueError, match=r"inner\.note\n.*control character, U\+0000"):
        Outer.model_validate({"inner": {"note": "a\x00"}})
    with pytest.raises(ValueError, match=r"inner\.tags\n.*U\+001B"):
        Outer.model_validate({"inner": {"note": "fine", "tags": ["ok", "\x1b[31m"]}})
    # a field with a pattern refuses them by its pattern
    entries = [{"name": "adam", "label": "a\x00"}]
    with pytest.raises(ValueError, match=r"optimizers\.0\.adam\.label"):
        JobSpec.model_validate(spec(optimizers=entries))
    assert JobSpec.model_validate(spec(name="spaces, ünïcode, 表情 🙂: fine")).name.endswith("fine")


def test_a_search_space_s_listed_values_are_checked_for_control_characters() -> None:
    # Distribution is not a StrictModel (its "int" is an alias): its choice and grid values
    # were checked only against the hyperparameter, never for control characters.
    from services.spec.tuning import Distribution

    for kind in ("choice", "grid"):
        with pytest.raises(ValueError, match=rf"{kind}\n.*control character, U\+0000"):
            Distribution.model_validate({kind: ["strong_wolfe", "strong\x00wolfe"]})
        with pytest.raises(ValueError, match=r"lone surrogate, U\+D800"):
            Distribution.model_validate({kind: ["\ud800"]})
    assert Distribution.model_validate({"choice": ["strong_wolfe", None]}).values == [
        "strong_wolfe",
        None,
    ]


@pytest.mark.parametrize(
    ("search", "field"),
    [
        ({"line_search_fn": {"choice": ["strong_wolfe\x1b[2K", None]}}, "choice"),
        ({"line_search_fn": {"grid": [None, "\x00"]}}, "grid"),
        ({"lr\x00": {"uniform": [0.1, 0.5]}}, "search"),
    ],
)
def test_a_control_character_in_a_search_space_is_a_422_naming_it(
    client: TestClient, search: dict[str, Any], field: str
) -> None:
    body = spec(optimizers=[{"name": "lbfgs", "lr": 0.5, "search": search}], tuning={"trials": 2})
    fields = problem_fields(client.post("/v1/jobs", json=body))
    message = next((m for f, m in fields.items() if field in f), "")
    assert "control character" in message, fields
    assert client.get("/v1/jobs").json()["total"] == 0


def test_dict_keys_of_the_spec_are_checked_too() -> None:
    from services.spec.base import StrictModel

    class Budgets(StrictModel):
        per_label: dict[str, int]

    with pytest.raises(ValueError, match=r"per_label\n.*control character, U\+0007"):
        Budgets.model_validate({"per_label": {"a\x07": 1}})
    assert Budgets.model_validate({"per_label": {"adam 🙂": 1}}).per_label == {"adam 🙂": 1}


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"name": "my\x00data"}, "name"),
        ({"name": "my\x1bdata"}, "name"),
        ({"label_column": "la\x00bel"}, "label_column"),
        ({"task": "classification\x00"}, "task"),
    ],
)
def test_a_control_character_in_an_upload_form_field_is_a_422_naming_it(
    client: TestClient, form: dict[str, str], field: str
) -> None:
    rows = "".join(f"{i},{i % 2}\n" for i in range(12))
    response = client.post(
        "/v1/datasets",
        files={"file": ("d.csv", f"f,label\n{rows}".encode())},
        data={"label_column": "label", **form},
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"{field}: ") and "control character" in detail


def test_an_npz_member_x_of_raw_bytes_is_a_422(client: TestClient) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((20, 2)), y=np.arange(20) % 2)
    import zipfile

    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("x", b"raw bytes")
    response = client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())})
    assert response.status_code == 422, response.text


def cursor_of(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "value",
    [["step", 1, True], ["step", True, 1], ["step", False, False], ["step", 1.0, 2], ["step", 1]],
)
def test_a_cursor_holding_a_boolean_or_a_float_is_a_422(client: TestClient, value: Any) -> None:
    job_id, _ = make_job({"a": 30})
    response = client.get(
        f"/v1/jobs/{job_id}/metrics", params={"limit": 5, "cursor": cursor_of(value)}
    )
    assert "cursor" in problem_fields(response)


def test_cursors_decode_strictly() -> None:
    assert decode_cursor(encode_cursor("step", 3, 7), "step") == (3, 7)
    with pytest.raises(InvalidSpec, match="cursor"):
        decode_cursor(cursor_of(["step", 1, True]), "step")
    with pytest.raises(InvalidSpec, match="cursor"):
        decode_cursor(cursor_of([["step"], 1, 1]), "step")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"runs": "a\x00"}, "query.runs"),
        ({"fields": "loss\x00"}, "query.fields"),
        ({"cursor": "\x00"}, "query.cursor"),
    ],
)
def test_a_control_character_in_a_query_parameter_is_a_422_naming_it(
    client: TestClient, params: dict[str, str], field: str
) -> None:
    job_id, _ = make_job({"a": 5})
    response = client.get(f"/v1/jobs/{job_id}/metrics", params=params)
    fields = problem_fields(response)
    assert "control character" in fields[field], fields


def test_a_control_character_in_a_path_parameter_is_a_422(client: TestClient) -> None:
    response = client.get("/web/app%00.js")
    assert response.status_code == 422, response.text


def test_a_value_the_database_refuses_is_a_422(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backstop behind validation: SQLSTATE class 22 (data exception) is the input's fault.
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise DataError("INSERT INTO job ...", {"name": "SECRET-NAME"}, ValueError("NUL"))

    monkeypatch.setattr("services.jobs.submit", refuse)
    response = client.post("/v1/jobs", json=spec())
    assert response.status_code == 422, response.text
    assert "SECRET-NAME" not in response.text


def test_an_unexpected_error_is_logged_with_the_request_id_and_class_only(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"spec-value-{uuid.uuid4().hex}"

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise IntegrityError(f"INSERT INTO job (name) VALUES ('{secret}')", {"name": secret}, None)  # type: ignore[arg-type]

    monkeypatch.setattr("services.jobs.submit", fail)
    quiet = local_client(client.app, raise_server_exceptions=False)
    quiet.headers.update({"X-Request-ID": "trace-me-42"})
    with caplog.at_level(logging.DEBUG):
        response = quiet.post("/v1/jobs", json=spec(name=secret))
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["x-request-id"] == "trace-me-42"
    assert response.json()["request_id"] == "trace-me-42"
    assert secret not in response.text
    logged = "\n".join(
        record.getMessage() + (caplog.text if record.exc_info else "") for record in caplog.records
    )
    assert "trace-me-42" in logged and "IntegrityError" in logged
    assert secret not in caplog.text


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    first, second = client.get("/healthz"), client.get("/healthz")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    echoed = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    # a client's id that could forge a log line is replaced, not echoed
    forged = client.get("/healthz", headers={"X-Request-ID": "x" * 300})
    assert forged.headers["x-request-id"] != "x" * 300

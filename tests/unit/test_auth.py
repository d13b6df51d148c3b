"""API keys, authentication and owner isolation, in-process on the embedded default.

The routes are enumerated from the app's OpenAPI schema: a /v1 route added later is checked
for a 401 without a key and a 404 for another owner's ids without being listed here.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services import auth
from services.api.app import create_app
from services.cli import main
from services.client import ApiClient
from services.db.models import ApiKey
from services.db.session import unit_of_work
from services.errors import InvalidSpec
from services.settings import get_settings
from tests.support import TINY_SUITE, local_client, url_of, v1_operations

PROBLEM = "application/problem+json"
SPEC: dict[str, Any] = {
    "name": "tiny",
    "dataset": {"name": "iris"},
    "model": {"name": "linear"},
    "optimizers": [{"name": "sgd", "lr": 0.1}],
    "epochs": 1,
}
PUBLIC = ["/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/web/js/main.js"]


def npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 2)
    return buffer.getvalue()


def remote(app: Any, key: str | None = None) -> TestClient:
    """A client from another machine (TestClient's own peer and host names)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return TestClient(app, headers=headers)


@pytest.fixture
def app_factory(embedded_home: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    def make(**env: str) -> Any:
        for name, value in env.items():
            monkeypatch.setenv(f"OPTBENCH_{name.upper()}", value)
        get_settings.cache_clear()
        return create_app()

    return make


@pytest.fixture
def app(app_factory: Callable[..., Any]) -> Any:
    # These tests send wrong keys on every route on purpose: past the failed-authentication
    # limit they would get 429s (that limit: tests/unit/test_auth_hardening.py).
    return app_factory(auth_failures_per_minute="100000")


@pytest.fixture
def owned(app: Any) -> dict[str, str]:
    """Owner alice's key, job, data set and suite, and bob's key."""
    alice, bob = auth.create_key("alice").token, auth.create_key("bob").token
    with remote(app, alice) as client:
        suite = client.post("/v1/suites", json=TINY_SUITE)  # first: her job is her newest
        assert suite.status_code == 202, suite.text
        job = client.post("/v1/jobs", json=SPEC)
        assert job.status_code == 202, job.text
        data = client.post("/v1/datasets", files={"file": ("d.npz", npz())})
        assert data.status_code == 201, data.text
    return {
        "alice": alice,
        "bob": bob,
        "job_id": job.json()["id"],
        "dataset_id": data.json()["id"],
        "suite_id": suite.json()["id"],
        "label": "adam",  # the history's path, no owned id
    }


# --- keys ----------------------------------------------------------------------------------


def test_a_key_is_shown_once_and_stored_as_a_hash(embedded_home: Path) -> None:
    key = auth.create_key("alice")
    assert re.fullmatch(r"ob_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key.token)
    assert key.token.startswith(f"ob_{key.id}_")
    with unit_of_work() as session:
        row = session.scalars(select(ApiKey)).one()
        stored = json.dumps({c.name: str(getattr(row, c.name)) for c in ApiKey.__table__.columns})
    secret = key.token.split("_", 2)[2]
    assert secret not in stored and key.token not in stored
    assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()

    assert auth.authenticate(key.token) == "alice"
    assert auth.list_keys()[0].last_used_at is not None
    assert auth.authenticate(key.token[:-1] + ("A" if key.token[-1] != "A" else "B")) is None
    assert auth.authenticate("ob_000000000000_" + secret) is None
    assert auth.authenticate("not a key") is None
    auth.revoke_key(key.id)
    assert auth.authenticate(key.token) is None


def test_owner_names_are_checked(embedded_home: Path) -> None:
    for bad in ("", "has space", "-leading", "x" * 129, "ünïcode"):
        with pytest.raises(InvalidSpec, match="owner"):
            auth.create_key(bad)


def test_keys_commands(embedded_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--owner", "alice"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert auth.authenticate(token) == "alice"
    assert "not shown again" in err and token not in err

    assert main(["keys", "create", "--owner", "bob", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["owner"] == "bob" and auth.authenticate(created["key"]) == "bob"

    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "bob" in listing
    assert token not in listing and created["key"] not in listing

    assert main(["keys", "revoke", created["id"]]) == 0
    assert "revoked" in capsys.readouterr().out
    assert auth.authenticate(created["key"]) is None
    assert main(["keys", "list", "--json", "--owner", "bob"]) == 0
    (bob,) = json.loads(capsys.readouterr().out)
    assert bob["revoked_at"] is not None and "key" not in bob

    assert main(["keys", "revoke", "000000000000"]) == 1  # no such key
    assert "no API key" in capsys.readouterr().err
    assert main(["keys", "create", "--owner", "no spaces please"]) == 4  # refused input


def test_the_client_sends_the_key_as_a_bearer_header() -> None:
    with ApiClient("http://127.0.0.1:1", api_key="ob_k") as client:
        assert client.http.headers["authorization"] == "Bearer ob_k"
    with ApiClient("http://127.0.0.1:1") as client:
        assert "authorization" not in client.http.headers


# --- 401 -----------------------------------------------------------------------------------


def assert_401(response: Any) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")
    body: dict[str, Any] = response.json()
    assert "optbench keys create" in body["detail"]
    return body


def every_v1_request(app: Any, ids: dict[str, str]) -> list[tuple[str, str]]:
    operations = v1_operations(app.openapi())
    assert ("POST", "/v1/jobs") in operations and ("GET", "/v1/jobs/{job_id}/report") in operations
    return [(method, url_of(path, ids) or path) for method, path in operations]


def test_every_v1_route_needs_a_key_from_another_machine(owned: dict[str, str], app: Any) -> None:
    revoked = auth.create_key("carol")
    auth.revoke_key(revoked.id)
    requests = every_v1_request(app, owned)
    for key in (None, revoked.token, "ob_nonsense", owned["alice"] + "x"):
        with remote(app, key) as client:
            for method, path in requests:
                assert_401(client.request(method, path, json=SPEC))
    with TestClient(app, headers={"Authorization": f"Basic {owned['alice']}"}) as client:
        assert "Bearer" in assert_401(client.get("/v1/jobs"))["detail"]
    with remote(app) as client:
        for path in PUBLIC:
            assert client.get(path).status_code == 200, path


def test_an_unauthenticated_body_is_not_read(owned: dict[str, str], app: Any) -> None:
    with remote(app) as client:
        assert_401(client.post("/v1/jobs", content=b"x" * 5_000_000))
        assert_401(client.post("/v1/datasets", files={"file": ("d.npz", npz())}))


def test_loopback_needs_no_key_and_acts_as_local(owned: dict[str, str], app: Any) -> None:
    with local_client(app) as client:
        job = client.post("/v1/jobs", json=SPEC)
        assert job.status_code == 202
        listing = client.get("/v1/jobs").json()
        assert [item["id"] for item in listing["items"]] == [job.json()["id"]]
        # a key sent from this machine is checked, and a bad one refused
        assert_401(client.get("/v1/jobs", headers={"Authorization": "Bearer ob_bad"}))
        mine = client.get("/v1/jobs", headers={"Authorization": f"Bearer {owned['alice']}"})
        assert mine.json()["items"][0]["id"] == owned["job_id"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},  # DNS rebinding: a page of another site, resolved to 127.0.0.1
        {"Origin": "http://evil.example"},  # another site's page posting to this machine
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_loopback_does_not_trust_other_web_origins(app: Any, headers: dict[str, str]) -> None:
    with local_client(app) as client:
        assert_401(client.post("/v1/jobs", json=SPEC, headers=headers))


def test_the_api_s_own_page_may_post_without_a_key(app: Any) -> None:
    origin = {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"}
    with local_client(app) as client:
        assert client.post("/v1/jobs", json=SPEC, headers=origin).status_code == 202
    with local_client(app, base_url="http://localhost:8000", client=("::1", 1)) as client:
        assert client.get("/v1/jobs").status_code == 200


def test_auth_required_refuses_loopback_without_a_key(app_factory: Callable[..., Any]) -> None:
    app = app_factory(auth="required")
    key = auth.create_key("local").token
    with local_client(app) as client:
        body = assert_401(client.get("/v1/jobs"))
        assert "OPTBENCH_AUTH=required" in body["detail"]
        assert client.get("/healthz").status_code == 200
        with_key = client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert with_key.status_code == 200


# --- isolation -----------------------------------------------------------------------------


def test_another_owner_gets_404_on_every_route_with_an_id(owned: dict[str, str], app: Any) -> None:
    checked = []
    for method, path in v1_operations(app.openapi()):
        url = url_of(path, owned)
        if url is None:
            continue
        if method != "DELETE":  # alice deleting her own would end the test; below instead
            with remote(app, owned["alice"]) as alice:
                assert alice.request(method, url).status_code == 200, url  # not vacuous
        with remote(app, owned["bob"]) as bob:
            response = bob.request(method, url)
        assert response.status_code == 404, (method, url, response.text)
        if method == "DELETE":  # bob's attempt deleted nothing
            with remote(app, owned["alice"]) as alice:
                assert alice.get(url).status_code == 200, url
        assert response.headers["content-type"] == PROBLEM
        assert owned["job_id"] not in response.text or "no job with id" in response.text
        checked.append(path)
    assert {"/v1/jobs/{job_id}", "/v1/datasets/{dataset_id}"} <= set(checked)
    assert {"/v1/compare", "/v1/optimizers/{label}/history"} <= set(checked)
    assert checked.count("/v1/datasets/{dataset_id}") == 2  # GET and DELETE
    with remote(app, owned["alice"]) as alice:  # her own deletions get past the owner check
        # (the loop cancelled her job: POST .../cancel, so it may be deleted)
        assert alice.delete(f"/v1/jobs/{owned['job_id']}").status_code == 200
        assert alice.get(f"/v1/jobs/{owned['job_id']}").status_code == 404
        assert alice.delete(f"/v1/datasets/{owned['dataset_id']}").status_code == 200


def test_listings_show_only_the_owner_s(owned: dict[str, str], app: Any) -> None:
    with remote(app, owned["bob"]) as bob:
        assert bob.get("/v1/jobs").json()["total"] == 0
        assert bob.get("/v1/datasets").json()["total"] == 0
        assert bob.post("/v1/jobs", json=SPEC).status_code == 202
        assert bob.get("/v1/jobs").json()["total"] == 1
    with remote(app, owned["alice"]) as alice:
        jobs = alice.get("/v1/jobs").json()
        assert [job["id"] for job in jobs["items"] if job["suite_id"] is None] == [owned["job_id"]]
        assert [job["suite_id"] for job in jobs["items"]][1:] == [owned["suite_id"]]
        assert alice.get("/v1/datasets").json()["items"][0]["id"] == owned["dataset_id"]
    with local_client(app) as local:
        assert local.get("/v1/jobs").json()["total"] == 0


def test_a_job_may_only_name_its_owner_s_upload(owned: dict[str, str], app: Any) -> None:
    spec = {**SPEC, "dataset": {"name": "upload", "id": owned["dataset_id"]}}
    with remote(app, owned["bob"]) as bob:
        refused = bob.post("/v1/jobs", json=spec)
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("dataset.id: no uploaded data set with id")
    with remote(app, owned["alice"]) as alice:
        assert alice.post("/v1/jobs", json=spec).status_code == 202


# --- secrets, CORS, hosts ------------------------------------------------------------------


def test_keys_stay_out_of_logs_and_metrics(
    owned: dict[str, str], app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with remote(app, owned["alice"]) as client:
        client.get(f"/v1/jobs/{owned['job_id']}")
        metrics = client.get("/metrics").text
    with remote(app, "ob_000000000000_" + "x" * 43) as client:
        client.get("/v1/jobs")
    for secret in (owned["alice"], "x" * 43):
        assert secret not in caplog.text
        assert secret not in metrics
    assert "alice" not in metrics  # no owner label either


def test_cors_origins_and_allowed_hosts_are_settings(app_factory: Callable[..., Any]) -> None:
    app = app_factory(cors_origins="https://lab.example.org", allowed_hosts="api.example.org")
    key = auth.create_key("alice").token
    with TestClient(app, base_url="https://api.example.org") as client:
        preflight = client.options(
            "/v1/jobs",
            headers={
                "Origin": "https://lab.example.org",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://lab.example.org"
        answer = client.get(
            "/v1/jobs",
            headers={"Origin": "https://lab.example.org", "Authorization": f"Bearer {key}"},
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://lab.example.org"
        other = client.get("/v1/jobs", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with TestClient(app, base_url="http://elsewhere.example") as client:
        assert client.get("/healthz").status_code == 400


def test_by_default_no_origin_is_allowed_and_any_host_answers(app: Any) -> None:
    with TestClient(app, base_url="http://anything.example") as client:
        response = client.get("/healthz", headers={"Origin": "https://lab.example.org"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_celery_accepts_json_only(embedded_home: Path) -> None:
    """Workers and the API's client share this configuration: no pickle from the broker."""
    from services.queue import celery_config

    config = celery_config(get_settings())
    assert config["accept_content"] == ["json"]
    assert config["task_serializer"] == config["result_serializer"] == "json"

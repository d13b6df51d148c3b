"""Issue 16, points 3 and 6: keys by default where the service is shared, forwarded headers
trusted only from configured proxies, failed authentications rate limited per client address,
/metrics optionally behind a bearer token, the worker's metrics bind address a setting.

Each test first reproduced the problem on the code before the fix (see the issue's problems 4
and 7): keyless access on PostgreSQL, a proxy's X-Forwarded-For ignored, 300 wrong keys all
looked up, /metrics public, the worker's metrics on 0.0.0.0.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services import auth
from services.api import ratelimit
from services.api.app import create_app
from services.settings import Settings, get_settings
from tests.support import local_client

PROBLEM = "application/problem+json"
SPEC: dict[str, Any] = {
    "name": "tiny",
    "dataset": {"name": "iris"},
    "model": {"name": "linear"},
    "optimizers": [{"name": "sgd", "lr": 0.1}],
    "epochs": 1,
}
POSTGRES = "postgresql+psycopg://optbench:pw@db.example:5432/optbench"


@pytest.fixture
def app_factory(embedded_home: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    def make(**env: str) -> Any:
        for name, value in env.items():
            monkeypatch.setenv(f"OPTBENCH_{name.upper()}", value)
        get_settings.cache_clear()
        return create_app()

    return make


def settings_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("OPTBENCH_AUTH", "OPTBENCH_DATABASE_URL", "OPTBENCH_WORKER_METRICS_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(f"OPTBENCH_{name.upper()}", value)
    return Settings()


# --- point 3: which authentication mode applies when --------------------------------------


def test_keys_are_required_by_default_off_the_embedded_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPTBENCH_HOME", str(tmp_path))
    assert settings_with(monkeypatch).auth == "loopback"  # SQLite under OPTBENCH_HOME
    sqlite_file = f"sqlite:///{tmp_path / 'other.db'}"
    assert settings_with(monkeypatch, database_url=sqlite_file).auth == "loopback"
    assert settings_with(monkeypatch, database_url=POSTGRES).auth == "required"
    # the operator may choose either explicitly, whatever the database
    assert settings_with(monkeypatch, database_url=POSTGRES, auth="loopback").auth == "loopback"
    assert settings_with(monkeypatch, auth="required").auth == "required"
    assert settings_with(monkeypatch, database_url=POSTGRES, auth="auto").auth == "required"
    with pytest.raises(ValueError, match="OPTBENCH_AUTH"):
        settings_with(monkeypatch, auth="sometimes")


@pytest.mark.integration
def test_a_keyless_local_request_on_postgresql_is_refused(
    postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Problem 4: with PostgreSQL configured, a keyless request from this machine acted as
    owner 'local' (and so did everything a same-machine reverse proxy forwarded)."""
    monkeypatch.delenv("OPTBENCH_AUTH", raising=False)
    get_settings.cache_clear()
    app = create_app()
    with local_client(app) as client:
        refused = client.get("/v1/jobs")
        assert refused.status_code == 401, refused.text
        assert "OPTBENCH_AUTH=required" in refused.json()["detail"]
        assert "OPTBENCH_AUTH=loopback" in refused.json()["detail"]  # how to opt out
        key = auth.create_key("alice").token
        mine = client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert mine.status_code == 200


# --- point 3: forwarded headers --------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"},  # a forged first hop, the real client
        {"Forwarded": "for=203.0.113.9;proto=https"},
        {"Forwarded": 'for="[2001:db8::17]:4711"'},
        {"Forwarded": "for=127.0.0.1, for=203.0.113.9"},
    ],
)
def test_a_trusted_proxy_s_forwarded_client_is_not_local(
    app_factory: Callable[..., Any], headers: dict[str, str]
) -> None:
    app = app_factory(forwarded_allow_ips="127.0.0.1")
    with local_client(app) as client:
        refused = client.post("/v1/jobs", json=SPEC, headers=headers)
        assert refused.status_code == 401, refused.text
        assert client.post("/v1/jobs", json=SPEC).status_code == 202  # the proxy itself is


def test_a_trusted_proxy_may_forward_a_local_client(app_factory: Callable[..., Any]) -> None:
    app = app_factory(forwarded_allow_ips="127.0.0.0/8, ::1")
    with local_client(app) as client:
        for headers in ({"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": 'for="[::1]"'}):
            assert client.get("/v1/jobs", headers=headers).status_code == 200, headers


@pytest.mark.parametrize(
    "headers",
    [{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}],
)
def test_forwarded_headers_from_an_untrusted_peer_are_not_local(
    app_factory: Callable[..., Any], headers: dict[str, str]
) -> None:
    """No proxy configured (the default): the header is not believed, but a request that some
    proxy forwarded is not from this machine either."""
    app = app_factory()
    with local_client(app) as client:
        assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_a_remote_peer_cannot_claim_to_be_loopback(app_factory: Callable[..., Any]) -> None:
    app = app_factory(forwarded_allow_ips="127.0.0.1")
    for headers in ({"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}):
        with local_client(app, client=("198.51.100.7", 4000)) as client:
            assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_disagreeing_forwarded_headers_are_not_believed(app_factory: Callable[..., Any]) -> None:
    """A proxy that writes one header passes a client's forged other header through."""
    app = app_factory(forwarded_allow_ips="127.0.0.1")
    forged = {"Forwarded": "for=127.0.0.1", "X-Forwarded-For": "203.0.113.9"}
    with local_client(app) as client:
        assert client.get("/v1/jobs", headers=forged).status_code == 401


def test_the_forwarded_allow_ips_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"OPTBENCH_FORWARDED_ALLOW_IPS.*not-an-address"):
        settings_with(monkeypatch, forwarded_allow_ips="10.0.0.1,not-an-address")
    parsed = settings_with(monkeypatch, forwarded_allow_ips="10.0.0.0/8, ::1")
    assert [str(net) for net in parsed.forwarded_allow_networks] == ["10.0.0.0/8", "::1/128"]


def test_optbench_api_leaves_forwarded_headers_to_the_app(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's own proxy handling trusts 127.0.0.1's X-Forwarded-For by default and knows
    no Forwarded header: `optbench api` turns it off, the app resolves both from the setting."""
    import uvicorn

    from services.cli import main

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **options: seen.update(options))
    assert main(["api", "--port", "8123"]) == 0
    assert seen["proxy_headers"] is False and seen["port"] == 8123


# --- point 6: failed authentications are rate limited -------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    now = [1000.0]
    monkeypatch.setattr(ratelimit, "_now", lambda: now[0])
    yield now


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key the API looked up in the database."""
    seen: list[str] = []
    real = auth.authenticate

    def counting(token: str) -> str | None:
        seen.append(token)
        return real(token)

    monkeypatch.setattr(auth, "authenticate", counting)
    return seen


def wrong_key(number: int) -> dict[str, str]:
    return {"Authorization": f"Bearer ob_{number:012x}_{'x' * 43}"}


def test_failed_keys_are_rate_limited_per_client_address(
    app_factory: Callable[..., Any], clock: list[float], lookups: list[str]
) -> None:
    """Problem 7: 300 wrong keys all got 401, each a database lookup."""
    app = app_factory(auth_failures_per_minute="10")
    good = auth.create_key("alice").token
    statuses = []
    with TestClient(app, client=("198.51.100.7", 4000)) as attacker:
        for number in range(300):
            statuses.append(attacker.get("/v1/jobs", headers=wrong_key(number)).status_code)
        limited = attacker.get("/v1/jobs", headers=wrong_key(999))
        # a right key from that address waits too: telling it apart would need the lookup
        right = attacker.get("/v1/jobs", headers={"Authorization": f"Bearer {good}"})
        assert right.status_code == 429
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429] * 290
    assert len(lookups) == 10  # no database lookup per refused attempt once limited
    assert limited.headers["content-type"] == PROBLEM
    assert limited.headers["retry-after"] == "6"  # one more attempt per 60 s / 10
    body = limited.json()
    assert (
        body["retry_after_seconds"] == 6 and "OPTBENCH_AUTH_FAILURES_PER_MINUTE" in body["detail"]
    )

    with TestClient(app, client=("198.51.100.8", 4000)) as neighbour:  # another address
        assert neighbour.get("/v1/jobs", headers=wrong_key(1)).status_code == 401
        assert neighbour.get("/v1/jobs", headers={"Authorization": f"Bearer {good}"}).is_success

    clock[0] += 6  # Retry-After later, one attempt again
    with TestClient(app, client=("198.51.100.7", 4000)) as attacker:
        assert attacker.get("/v1/jobs", headers={"Authorization": f"Bearer {good}"}).is_success
        assert attacker.get("/v1/jobs", headers=wrong_key(1)).status_code == 401
        assert attacker.get("/v1/jobs", headers=wrong_key(1)).status_code == 429
        clock[0] += 60  # a minute later, the whole allowance is back
        assert [attacker.get("/v1/jobs", headers=wrong_key(2)).status_code for _ in range(11)] == [
            401
        ] * 10 + [429]


def test_a_malformed_header_counts_as_a_failure(
    app_factory: Callable[..., Any], clock: list[float]
) -> None:
    app = app_factory(auth_failures_per_minute="3")
    with TestClient(app, headers={"Authorization": "Basic dXNlcjpwdw=="}) as client:
        assert [client.get("/v1/jobs").status_code for _ in range(4)] == [401, 401, 401, 429]


def test_the_limit_follows_the_forwarded_client(
    app_factory: Callable[..., Any], clock: list[float]
) -> None:
    """Behind a trusted proxy the limit is per real client, not one for everyone."""
    app = app_factory(auth_failures_per_minute="2", forwarded_allow_ips="127.0.0.1")
    with local_client(app) as proxy:
        one, other = {"X-Forwarded-For": "203.0.113.1"}, {"X-Forwarded-For": "203.0.113.2"}
        codes = [
            proxy.get("/v1/jobs", headers={**one, **wrong_key(n)}).status_code for n in range(3)
        ]
        assert codes == [401, 401, 429]
        assert proxy.get("/v1/jobs", headers={**other, **wrong_key(9)}).status_code == 401


def test_ipv6_clients_are_limited_by_their_64_prefix(clock: list[float]) -> None:
    """One host holds a whole /64: rotating addresses in it must not reset the limit."""
    limiter = ratelimit.FailureLimiter(per_minute=2)
    limiter.failed("2001:db8:1:2::1")
    limiter.failed("2001:db8:1:2::ffff")
    assert limiter.retry_after("2001:db8:1:2:aaaa::3") == 30
    assert limiter.retry_after("2001:db8:1:3::1") is None
    assert limiter.retry_after("::ffff:192.0.2.1") is None


def test_the_limiter_s_memory_is_bounded(clock: list[float]) -> None:
    limiter = ratelimit.FailureLimiter(per_minute=1, max_clients=100)
    for number in range(10_000):
        limiter.failed(f"10.{number // 65536}.{number // 256 % 256}.{number % 256}")
    assert len(limiter) <= 100
    assert limiter.retry_after("10.0.39.15") == 60  # the newest are kept


# --- point 6: /metrics --------------------------------------------------------------------


def test_metrics_can_require_a_bearer_token(
    app_factory: Callable[..., Any], clock: list[float]
) -> None:
    """Problem 7: /metrics was public and counts every owner's jobs."""
    app = app_factory(metrics_token="s3cret-token", auth_failures_per_minute="5")
    key = auth.create_key("alice").token
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {key}"}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["content-type"] == PROBLEM
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "OPTBENCH_METRICS_TOKEN" in refused.json()["detail"]
            assert "optbench_jobs" not in refused.text
        scraped = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert scraped.status_code == 200 and "optbench_jobs{" in scraped.text
        # the token is no API key
        assert (
            client.get("/v1/jobs", headers={"Authorization": "Bearer s3cret-token"}).status_code
            == 401
        )
        # wrong tokens count against the same per-address limit
        codes = [
            client.get("/metrics", headers={"Authorization": "Bearer no"}).status_code
            for _ in range(3)
        ]
        assert codes[-1] == 429
    with local_client(app) as local:  # no exception for this machine: Prometheus may be here
        assert local.get("/metrics").status_code == 401


def test_metrics_stay_public_without_a_token(app_factory: Callable[..., Any]) -> None:
    app = app_factory()
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 200


def npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 2)
    return buffer.getvalue()


def test_metrics_hold_no_per_owner_counts(app_factory: Callable[..., Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    app = app_factory()
    keys = {owner: auth.create_key(owner).token for owner in ("alice", "bob")}
    for owner, key in keys.items():
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
            assert client.post("/v1/jobs", json={**SPEC, "name": owner}).status_code == 202
            assert client.post("/v1/datasets", files={"file": ("d.npz", npz())}).is_success
    with TestClient(app) as client:
        text = client.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["optbench_jobs"].samples  # not vacuous: the job counts are there
    for family in families.values():
        for sample in family.samples:
            assert not {"owner", "key", "key_id", "user"} & set(sample.labels), sample
            assert not {"alice", "bob"} & set(sample.labels.values()), sample
    queued = [s for s in families["optbench_jobs"].samples if s.labels["status"] == "queued"]
    assert [
        s.labels for s in families["optbench_jobs"].samples if s.labels.keys() != {"status"}
    ] == []
    assert queued[0].value == 2  # one total over the owners, never one per owner


# --- point 6: the worker's metrics bind address ----------------------------------------------


def test_the_worker_s_metrics_bind_address(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Problem 7: the worker's metrics server bound 0.0.0.0, even on the embedded default."""
    monkeypatch.setenv("OPTBENCH_HOME", str(tmp_path))
    assert settings_with(monkeypatch).worker_metrics_bind == "127.0.0.1"
    assert settings_with(monkeypatch, database_url=POSTGRES).worker_metrics_bind == "0.0.0.0"
    chosen = settings_with(monkeypatch, worker_metrics_address="::1")
    assert chosen.worker_metrics_bind == "::1"
    with pytest.raises(ValueError, match="OPTBENCH_WORKER_METRICS_ADDRESS"):
        settings_with(monkeypatch, worker_metrics_address="everywhere")


def test_the_worker_serves_its_metrics_on_the_configured_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import httpx

    from tests.support import free_port
    from workers import celery_app

    port = free_port()
    settings = settings_with(monkeypatch, home=str(tmp_path), worker_metrics_port=str(port))
    server = celery_app.serve_metrics(settings, index=0)
    assert server is not None
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert "optbench_build_info" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        server.shutdown()
        server.server_close()
    off = settings_with(monkeypatch, home=str(tmp_path), worker_metrics_port="0")
    assert celery_app.serve_metrics(off, index=0) is None

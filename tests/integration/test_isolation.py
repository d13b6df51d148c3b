"""Authentication and owner isolation against the real ``optbench api`` process (and a worker)
on PostgreSQL, with ``OPTBENCH_AUTH=required``; keys made with ``optbench keys``.

Owner alice uploads a data set and trains a job on it. Every /v1 operation the running API
documents (its OpenAPI schema, so a route added later is covered without being listed here)
is then requested: bob's key gets a 404 wherever alice's ids go (and never her data), no key
and a revoked key get a 401 everywhere.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.conftest import Cluster, running_cluster
from tests.support import TINY_SUITE, url_of, v1_operations

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("OPTBENCH_TEST_REDIS_ISOLATION", "redis://127.0.0.1:6379/14")
PROBLEM = "application/problem+json"


def optbench(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, "OPTBENCH_DATABASE_URL": database_url, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def create_key(database_url: str, owner: str) -> dict[str, str]:
    made = optbench(database_url, "keys", "create", "--owner", owner, "--json")
    assert made.returncode == 0, made.stderr
    return dict(json.loads(made.stdout))


@pytest.fixture(scope="module")
def secured(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, dict[str, Any]]]:
    """The API with OPTBENCH_AUTH=required; alice's data set and finished job, the keys."""
    # Every route is asked with a revoked key on purpose: no failed-authentication limit
    # here (that one: tests/unit/test_auth_hardening.py).
    env = {"OPTBENCH_AUTH": "required", "OPTBENCH_AUTH_FAILURES_PER_MINUTE": "100000"}
    with running_cluster(postgres_url, tmp_path_factory, redis_url=REDIS_URL, env=env) as cluster:
        keys = {owner: create_key(postgres_url, owner) for owner in ("alice", "bob", "carol")}
        revoked = optbench(postgres_url, "keys", "revoke", keys["carol"]["id"])
        assert revoked.returncode == 0, revoked.stderr

        alice = auth_headers(keys["alice"]["key"])
        buffer = io.BytesIO()
        rng = np.random.default_rng(0)
        x = rng.normal(size=(120, 3))
        np.savez(buffer, x=x, y=(x[:, 0] > 0).astype(int))
        upload = cluster.client.post(
            "/v1/datasets",
            files={"file": ("alice-private.npz", buffer.getvalue())},
            headers=alice,
        )
        assert upload.status_code == 201, upload.text
        spec = {
            "name": "alice's private job",
            "dataset": {"name": "upload", "id": upload.json()["id"]},
            "model": {"name": "linear"},
            "optimizers": [{"name": "adam", "lr": 0.05}],
            "epochs": 2,
            "batch_size": 16,
        }
        submitted = cluster.client.post("/v1/jobs", json=spec, headers=alice)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        cluster.wait_for(
            lambda: (
                cluster.client.get(f"/v1/jobs/{job_id}", headers=alice).json()["status"]
                in ("succeeded", "failed")
            ),
            180,
            "alice's job to finish",
        )
        suite = cluster.client.post("/v1/suites", json=TINY_SUITE, headers=alice)
        assert suite.status_code == 202, suite.text
        suite_id = suite.json()["id"]
        cluster.wait_for(
            lambda: (
                cluster.client.get(f"/v1/suites/{suite_id}", headers=alice).json()["status"]
                in ("succeeded", "failed")
            ),
            180,
            "alice's suite to finish",
        )
        # "label": an optimizer label (the history's path), not an owned id; the history is
        # reached with alice's data set's id, the comparison with her job's (tests/support.py
        # QUERIES).
        ids = {
            "job_id": job_id,
            "dataset_id": upload.json()["id"],
            "suite_id": suite_id,
            "label": "adam",
        }
        yield cluster, {"keys": keys, "ids": ids, "spec": spec}


def auth_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def operations(cluster: Cluster) -> list[tuple[str, str]]:
    found = v1_operations(cluster.client.get("/openapi.json").json())
    assert ("GET", "/v1/jobs/{job_id}/metrics") in found and ("POST", "/v1/datasets") in found
    return found


def test_another_owner_gets_404_on_every_route_with_an_id(
    secured: tuple[Cluster, dict[str, Any]],
) -> None:
    cluster, world = secured
    alice, bob = (auth_headers(world["keys"][o]["key"]) for o in ("alice", "bob"))
    checked = []
    for method, path in operations(cluster):
        url = url_of(path, world["ids"])
        if url is None:
            continue
        # The 404 below is not a broken path: the owner reaches it (cancelling her finished
        # job is refused as 409, after the owner check). Her own DELETE would delete what
        # the other routes need: after bob's 404, her GET shows it is still there.
        if method != "DELETE":
            own = cluster.client.request(method, url, headers=alice)
            reached = {200, 409} if path.endswith("/cancel") else {200}
            assert own.status_code in reached, (url, own.text)
        other = cluster.client.request(method, url, headers=bob)
        assert other.status_code == 404, (method, url, other.text)
        assert other.headers["content-type"] == PROBLEM
        assert "alice" not in other.text  # neither her job's nor her data set's name
        if method == "DELETE":
            assert cluster.client.get(url, headers=alice).status_code == 200, url
        checked.append(path)
    assert "/v1/jobs/{job_id}/report" in checked and "/v1/datasets/{dataset_id}" in checked
    assert {"/v1/compare", "/v1/optimizers/{label}/history"} <= set(checked)
    assert ("DELETE", "/v1/jobs/{job_id}") in operations(cluster)


def test_listings_and_specs_see_only_the_owner_s(
    secured: tuple[Cluster, dict[str, Any]],
) -> None:
    cluster, world = secured
    alice, bob = (auth_headers(world["keys"][o]["key"]) for o in ("alice", "bob"))
    assert cluster.client.get("/v1/jobs", headers=bob).json()["total"] == 0
    assert cluster.client.get("/v1/datasets", headers=bob).json()["total"] == 0
    mine = cluster.client.get("/v1/jobs", headers=alice).json()["items"]
    assert [job["id"] for job in mine if job["suite_id"] is None] == [world["ids"]["job_id"]]
    assert {job["suite_id"] for job in mine} == {None, world["ids"]["suite_id"]}
    # bob may not train on alice's upload: the same answer as for one that does not exist
    refused = cluster.client.post("/v1/jobs", json=world["spec"], headers=bob)
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("dataset.id: no uploaded data set with id")


def test_no_key_and_a_revoked_key_get_401_on_every_route(
    secured: tuple[Cluster, dict[str, Any]],
) -> None:
    cluster, world = secured
    revoked = auth_headers(world["keys"]["carol"]["key"])
    for method, path in operations(cluster):
        url = url_of(path, world["ids"]) or path
        for headers in ({}, revoked):  # from 127.0.0.1, which AUTH=required does not trust
            response = cluster.client.request(method, url, headers=headers, json={})
            assert response.status_code == 401, (method, url, headers, response.text)
            assert response.headers["content-type"] == PROBLEM
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "optbench keys create" in response.json()["detail"]
    for public in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/"):
        assert cluster.client.get(public).status_code == 200


def test_the_cli_sends_its_key(secured: tuple[Cluster, dict[str, Any]]) -> None:
    cluster, world = secured
    url, job_id = f"http://127.0.0.1:{cluster.api_port}", world["ids"]["job_id"]
    alice = world["keys"]["alice"]["key"]
    ok = optbench(
        cluster.database_url, "summary", job_id, "--url", url, "--json", OPTBENCH_API_KEY=alice
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["optimizers"][0]["label"] == "adam"
    bob = world["keys"]["bob"]["key"]
    other = optbench(cluster.database_url, "status", job_id, "--url", url, "--key", bob)
    assert other.returncode == 1 and "404" in other.stderr
    missing = optbench(cluster.database_url, "status", job_id, "--url", url)
    assert (
        missing.returncode == 1 and "401" in missing.stderr and "OPTBENCH_API_KEY" in missing.stderr
    )
    for key in (alice, bob):
        assert key not in ok.stderr + other.stderr + missing.stderr


def test_keys_never_reach_the_logs_or_metrics(secured: tuple[Cluster, dict[str, Any]]) -> None:
    cluster, world = secured
    metrics = httpx.get(f"http://127.0.0.1:{cluster.api_port}/metrics").text
    logs = "".join(path.read_text(errors="replace") for path in cluster.logs)
    assert "GET /v1/jobs" in logs  # the access log is there, without headers
    for owner, made in world["keys"].items():
        secret = made["key"].split("_", 2)[2]
        assert secret not in logs and secret not in metrics
        assert owner not in metrics  # no owner label
    listing = optbench(cluster.database_url, "keys", "list")
    assert listing.returncode == 0
    assert all(made["key"] not in listing.stdout for made in world["keys"].values())
    assert world["keys"]["carol"]["id"] in listing.stdout

"""Helpers shared by the tests."""

from __future__ import annotations

import os
import shutil
import socket
from typing import TYPE_CHECKING, Any

from services.children import stop as stop_processes  # the demo's own, reused
from services.support import free_port

__all__ = [
    "LOCAL",
    "free_port",
    "local_client",
    "require_binary",
    "require_port",
    "stop_processes",
    "unavailable",
]

import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

# Where an in-process TestClient's requests come from and go to: this machine, so that under
# OPTBENCH_AUTH=loopback (the default) they need no key and act as owner "local".
LOCAL = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 50000)}


def local_client(app: Any, **options: Any) -> TestClient:
    """A TestClient calling from 127.0.0.1, as the CLI and the web page do on this machine."""
    from fastapi.testclient import TestClient

    return TestClient(app, **{**LOCAL, **options})


ON_CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    """Skip a test whose real dependency is missing here; under CI=true that is a failure."""
    if ON_CI:
        pytest.fail(f"{reason} (CI=true: dependencies must be present, not skipped)")
    pytest.skip(reason)


def require_binary(binary: str, hint: str) -> str:
    path = shutil.which(binary)
    if path is None:
        unavailable(f"{binary} not installed: {hint}")
    assert path is not None
    return path


def require_port(host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError:
        unavailable(f"{what} is not reachable at {host}:{port}")


_METHODS = {"get", "post", "put", "patch", "delete"}


def v1_operations(openapi: dict[str, Any]) -> list[tuple[str, str]]:
    """``(METHOD, path template)`` of every /v1 operation an API documents (its OpenAPI
    schema), so that a route added later is checked without anyone listing it here."""
    return sorted(
        (method.upper(), path)
        for path, item in openapi["paths"].items()
        if path.startswith("/v1")
        for method in item
        if method in _METHODS
    )


def fill(path: str, ids: dict[str, str]) -> str | None:
    """The path with its parameters filled from ``ids``; None when it takes none. A path
    parameter without an id fails: the isolation tests need one for it."""
    import re

    names = re.findall(r"{(\w+)}", path)
    if not names:
        return None
    missing = [name for name in names if name not in ids]
    assert not missing, f"{path}: no test id for {missing}; add one to the isolation tests"
    return path.format(**{name: ids[name] for name in names})


# Routes that name owned ids in their query string, not their path: what they get there.
QUERIES = {
    "/v1/compare": "jobs={job_id}",
    "/v1/optimizers/{label}/history": "dataset={dataset_id}",
}


def url_of(path: str, ids: dict[str, str]) -> str | None:
    """``fill``, with the query of the routes in QUERIES (None: the route names no id)."""
    url = fill(path, ids)
    if path in QUERIES:
        return f"{url or path}?{QUERIES[path].format(**ids)}"
    return url


# The smallest suite (services/spec/suite.py): one workload, one searched entry, one trial and
# one rerun; for the tests that need a suite id on every route (isolation, auth).
TINY_SUITE: dict[str, Any] = {
    "name": "tiny suite",
    "workloads": [
        {
            "name": "iris-linear",
            "dataset": {"name": "iris"},
            "model": {"name": "linear"},
            "epochs": 1,
            "target": {"metric": "val_accuracy", "value": 0.5},
        }
    ],
    "optimizers": [{"name": "sgd", "lr": 0.1, "search": {"lr": {"log_uniform": [0.01, 1.0]}}}],
    "tuning": {"trials": 1, "rerun_seeds": 1, "baseline": False},
}

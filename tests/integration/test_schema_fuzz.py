"""Schema fuzzing: schemathesis generates requests for every operation of the running API's
OpenAPI schema (``/openapi.json`` of the real ``optbench api`` process on PostgreSQL, with a
worker) and checks each answer: no 5xx, a status code the operation documents, a content
type it documents for that status, and a body that fits the documented schema.

The requests carry a real API key (``optbench keys create``) of an owner who has an
uploaded data set and a finished job. Each operation is fuzzed with data that fits the
schema and with data that does not (schemathesis's positive and negative modes); those
with a job or data set id in their path once more with that owner's real ids, so that the
routes behind the 404 (metrics, summary, report, cancel) see the generated query strings.

Bounded and repeatable: ``MAX_EXAMPLES`` (``MAX_EXAMPLES_WITH_IDS``) cases per operation
and mode, derandomized (the same cases on every run of this file), no example database, no
shrinking (a failure is reported as schemathesis found it, with a curl command to repeat
it); every distinct failure is collected before the test fails. Submissions the fuzzer
gets accepted stay small: the limits are lowered and the owner may have one job in flight.

(schemathesis's own pytest integration is not used: its lazy schema,
``schemathesis.pytest.from_fixture``, fails under pytest 9, and a schema loaded at import
could not be the running API's.)
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import schemathesis

from tests.integration.conftest import Cluster, running_cluster
from tests.integration.test_isolation import auth_headers, create_key

pytestmark = [pytest.mark.integration, pytest.mark.faults]


REDIS_URL = os.environ.get("OPTBENCH_TEST_REDIS_FUZZ", "redis://127.0.0.1:6379/10")
OWNER = "fuzz"
# Cases per operation and mode; more for the operations given the owner's real ids, where
# the cases get past the 404 to the database (and its integers' range: a 500 found there).
MAX_EXAMPLES = 30
MAX_EXAMPLES_WITH_IDS = 100
# What the checks hold every answer to (schemathesis.checks): not_a_server_error,
# status_code_conformance, content_type_conformance and response_schema_conformance.
CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


@dataclass
class World:
    cluster: Cluster
    base_url: str
    headers: dict[str, str]
    ids: dict[str, str]  # path parameter -> the owner's real id


@pytest.fixture(scope="module")
def world(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    env = {
        "OPTBENCH_AUTH": "required",
        # whatever the fuzzer gets accepted trains in a moment, one job at a time
        "OPTBENCH_MAX_JOBS_IN_FLIGHT": "1",
        "OPTBENCH_MAX_RUNS_PER_JOB": "4",
        "OPTBENCH_MAX_STEPS_PER_RUN": "500",
        "OPTBENCH_MAX_MODEL_PARAMETERS": "20000",
        "OPTBENCH_MAX_UPLOAD_BYTES": "65536",
        "OPTBENCH_JOB_PARTS": "1",
    }
    key = create_key(postgres_url, OWNER)["key"]
    with running_cluster(postgres_url, tmp_path_factory, redis_url=REDIS_URL, env=env) as cluster:
        headers = auth_headers(key)
        buffer = io.BytesIO()
        x = np.random.default_rng(0).normal(size=(60, 3))
        np.savez(buffer, x=x, y=(x[:, 0] > 0).astype(int))
        upload = cluster.client.post(
            "/v1/datasets", files={"file": ("fuzz.npz", buffer.getvalue())}, headers=headers
        )
        assert upload.status_code == 201, upload.text
        spec = {
            "name": "fuzz owner's job",
            "dataset": {"name": "upload", "id": upload.json()["id"]},
            "model": {"name": "linear"},
            "optimizers": [{"name": "adam", "lr": 0.05}, {"name": "sgd", "lr": 0.1}],
            "epochs": 2,
            "batch_size": 16,
        }
        submitted = cluster.client.post("/v1/jobs", json=spec, headers=headers)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        cluster.wait_for(
            lambda: (
                cluster.client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"]
                in ("succeeded", "failed")
            ),
            120,
            "the fuzz owner's job to finish",
        )
        job = cluster.client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        assert job["status"] == "succeeded", job["error"]
        yield World(
            cluster,
            f"http://127.0.0.1:{cluster.api_port}",
            headers,
            {"job_id": job_id, "dataset_id": upload.json()["id"]},
        )
        # Whatever the fuzzer queued: cancelled, so that the worker stops at once.
        listing = cluster.client.get("/v1/jobs", params={"limit": 200}, headers=headers).json()
        for job in listing["items"]:
            if job["status"] in ("queued", "running"):
                cluster.client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)


@dataclass
class Findings:
    """What fuzzing saw: the distinct failures (by operation, mode, check and the first line
    of its message, each with its first case as a curl command, without the key), and the
    status codes each operation answered."""

    failures: dict[tuple[str, ...], str] = field(default_factory=dict)
    statuses: dict[str, set[int]] = field(default_factory=dict)


def fuzz(
    operation: Any,
    mode: Any,
    world: World,
    found: Findings,
    path_parameters: dict[str, str] | None = None,
    max_examples: int = MAX_EXAMPLES,
) -> None:
    """Run ``max_examples`` cases of one operation in one generation mode into ``found``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from requests.exceptions import RequestException

    checks = [getattr(schemathesis.checks, name) for name in CHECK_NAMES]
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    statuses = found.statuses.setdefault(operation.label, set())

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        try:
            response = case.call(base_url=world.base_url, headers=world.headers, timeout=30)
            statuses.add(response.status_code)
            case.validate_response(response, checks=checks, headers=world.headers)
        except (schemathesis.errors.FailureGroup, AssertionError, RequestException) as error:
            # RequestException: the API dropped the connection (an error after a streamed
            # response had started, for one)
            for failure in getattr(error, "exceptions", None) or [error]:
                message = str(getattr(failure, "message", failure))
                title = str(getattr(failure, "title", type(failure).__name__))
                key = (operation.label, mode.value, title, message.partition("\n")[0])
                found.failures.setdefault(
                    key,
                    f"{operation.label} [{mode.value}] {title}: {message}\n"
                    f"    {case.as_curl_command()}",
                )

    try:
        run()
    except Unsatisfiable:  # an operation without parameters or body: nothing to make invalid
        if mode.is_positive:
            raise


def operations(world: World) -> list[Any]:
    """Every operation of the running API's schema."""
    # The key is the real one (sent with every case); schemathesis generates no
    # Authorization header of its own, so negative cases change the parameters instead.
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    schema = schemathesis.openapi.from_url(f"{world.base_url}/openapi.json", config=config)
    found = [result.ok() for result in schema.get_all_operations()]
    labels = {operation.label for operation in found}
    assert {"POST /v1/jobs", "GET /v1/jobs/{job_id}/metrics", "POST /v1/datasets"} <= labels
    return found


def fuzz_all(world: World, select: Callable[[Any], dict[str, str] | None]) -> Findings:
    """Fuzz each operation ``select`` gives path parameters for ({}: none fixed; None: skip
    the operation), in both modes."""
    from schemathesis import GenerationMode

    found = Findings()
    for operation in operations(world):
        path_parameters = select(operation)
        if path_parameters is None:
            continue
        examples = MAX_EXAMPLES_WITH_IDS if path_parameters else MAX_EXAMPLES
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, world, found, path_parameters or None, examples)
    assert found.statuses, "no operation was fuzzed"
    return found


def test_every_operation_answers_as_documented(world: World) -> None:
    found = fuzz_all(world, lambda operation: {})
    assert not found.failures, "\n\n".join(found.failures.values())
    assert len(found.statuses) >= 14  # every /v1 operation, /metrics, /healthz, /readyz
    assert {200, 404, 422} <= set().union(*found.statuses.values())


def test_routes_with_ids_answer_as_documented_for_the_owner_s_own_ids(world: World) -> None:
    def own_ids(operation: Any) -> dict[str, str] | None:
        # Not the DELETE routes: a case that deletes the owner's job or data set would
        # leave the other operations only 404s (tests/unit/test_deletion.py covers them).
        names = [parameter.name for parameter in operation.path_parameters]
        keep = names and operation.method.upper() != "DELETE"
        return {name: world.ids[name] for name in names} if keep else None

    found = fuzz_all(world, own_ids)
    assert not found.failures, "\n\n".join(found.failures.values())
    # Each got past the 404 (cancelling the owner's finished job: a 409, after the check).
    assert set(found.statuses) == {
        "GET /v1/jobs/{job_id}",
        "POST /v1/jobs/{job_id}/cancel",
        "GET /v1/jobs/{job_id}/summary",
        "GET /v1/jobs/{job_id}/metrics",
        "GET /v1/jobs/{job_id}/report",
        "GET /v1/jobs/{job_id}/charts",
        "GET /v1/datasets/{dataset_id}",
    }
    for label, statuses in found.statuses.items():
        reached = 409 if label.endswith("/cancel") else 200
        assert reached in statuses, (label, statuses)

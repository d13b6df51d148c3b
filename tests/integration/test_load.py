"""Load: 200 job submissions from 20 concurrent clients against the real ``optbench api`` and
two ``optbench worker`` processes on PostgreSQL and Redis.

The clients act for four owners (a key each, five clients per owner) and the API allows
each owner ``IN_FLIGHT`` jobs queued or running (``OPTBENCH_MAX_JOBS_IN_FLIGHT``), so while
the two workers train, many submissions are refused. Every answer must be a 202 (accepted),
a 429 with Retry-After, or, for a request repeated with the same Idempotency-Key, a 200
naming the job the first one created: never a 5xx or anything else. None lost, none twice:
every accepted job is listed by ``GET /v1/jobs`` and reaches ``succeeded``, and the jobs
stored (read from PostgreSQL) are exactly the accepted ones, one per Idempotency-Key.

Idempotency: a third of the submissions carry an Idempotency-Key that two clients of the
same owner send at about the same moment (a race the owner's lock and the unique
(owner, key) index decide), and each of them sends it once more afterwards.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.integration.conftest import Cluster, running_cluster
from tests.integration.test_isolation import auth_headers, create_key

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REDIS_URL = os.environ.get("OPTBENCH_TEST_REDIS_LOAD", "redis://127.0.0.1:6379/13")
OWNERS = ("load-a", "load-b", "load-c", "load-d")
CLIENTS_PER_OWNER = 5
CLIENTS = len(OWNERS) * CLIENTS_PER_OWNER  # 20
PER_CLIENT = 10  # 200 submissions
IN_FLIGHT = 3
PAUSE = 0.3  # seconds a client waits between its submissions
FINISH_TIMEOUT = 90.0  # seconds for every accepted job to succeed, after the last submission


def tiny_spec(name: str) -> dict[str, Any]:
    """About a quarter of a second of training: digits, an 8-unit MLP, one epoch."""
    return {
        "name": name,
        "dataset": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [8]},
        "optimizers": [{"name": "sgd", "lr": 0.1}],
        "epochs": 1,
        "batch_size": 128,
        "seeds": [0],
    }


@dataclass
class Answer:
    owner: str
    client: int
    key: str | None  # the Idempotency-Key sent, if any
    repeat: bool  # the second sending of a keyed request
    status: int
    job_id: str | None
    retry_after: str | None
    replayed: bool
    content_type: str


@pytest.fixture(scope="module")
def loaded(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, dict[str, str]]]:
    env = {
        "OPTBENCH_AUTH": "required",
        "OPTBENCH_MAX_JOBS_IN_FLIGHT": str(IN_FLIGHT),
        "OPTBENCH_JOB_PARTS": "1",
        "OPTBENCH_TORCH_THREADS": "1",
    }
    with ThreadPoolExecutor(len(OWNERS)) as pool:  # `optbench keys create`, all at once
        made = pool.map(lambda owner: create_key(postgres_url, owner)["key"], OWNERS)
        keys = dict(zip(OWNERS, made, strict=True))
    with running_cluster(
        postgres_url, tmp_path_factory, redis_url=REDIS_URL, env=env, workers=2
    ) as cluster:
        yield cluster, keys


def submit(client: httpx.Client, owner: str, number: int, key: str | None, repeat: bool) -> Answer:
    headers = {"Idempotency-Key": key} if key else {}
    spec = tiny_spec(f"load {owner} {key or number}")
    response = client.post("/v1/jobs", json=spec, headers=headers)
    body = response.json() if response.headers.get("content-type", "").endswith("json") else {}
    return Answer(
        owner=owner,
        client=number,
        key=key,
        repeat=repeat,
        status=response.status_code,
        job_id=body.get("id") if response.status_code in (200, 202) else None,
        retry_after=response.headers.get("retry-after"),
        replayed=response.headers.get("idempotent-replayed") == "true",
        content_type=response.headers.get("content-type", ""),
    )


def client_session(
    base_url: str, api_key: str, owner: str, number: int, start: threading.Barrier
) -> list[Answer]:
    """One client's ten submissions. Clients 0 and 1 of an owner send the same keys at the
    same time (their rounds 0, 3, 6, 9) and each sends its keyed request twice; those
    repeats do not count towards the 200 submissions."""
    answers = []
    with httpx.Client(base_url=base_url, headers=auth_headers(api_key), timeout=30) as client:
        start.wait()
        for round_ in range(PER_CLIENT):
            keyed = number in (0, 1) and round_ % 3 == 0
            key = f"{owner}-round-{round_}" if keyed else None
            answers.append(submit(client, owner, number, key, repeat=False))
            if keyed:
                answers.append(submit(client, owner, number, key, repeat=True))
            time.sleep(PAUSE)  # a client that does something between requests
    return answers


def test_200_submissions_from_20_clients_none_lost_none_twice(
    loaded: tuple[Cluster, dict[str, str]],
) -> None:
    cluster, keys = loaded
    base_url = f"http://127.0.0.1:{cluster.api_port}"
    start = threading.Barrier(CLIENTS)
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = [
            pool.submit(client_session, base_url, keys[owner], owner, number, start)
            for owner in OWNERS
            for number in range(CLIENTS_PER_OWNER)
        ]
        answers = [answer for future in futures for answer in future.result(timeout=120)]

    first = [a for a in answers if not a.repeat]
    assert len(first) == CLIENTS * PER_CLIENT == 200

    # Every answer: 202, 429 with Retry-After, or 200 replaying a keyed request's job.
    unexpected = [
        a
        for a in answers
        if not (
            (a.status == 202 and a.job_id and not a.replayed)
            or (a.status == 429 and a.retry_after and a.retry_after.isdigit())
            or (a.status == 200 and a.key and a.replayed and a.job_id)
        )
    ]
    assert not unexpected, unexpected[:5]
    assert all(a.content_type == "application/problem+json" for a in answers if a.status == 429)
    statuses = {status: sum(a.status == status for a in answers) for status in (200, 202, 429)}
    # The limit bit, and yet the workers kept the owners going: both kinds of answer.
    assert statuses[429] > 0 and statuses[202] > len(OWNERS) * IN_FLIGHT, statuses
    print(f"answers by status: {statuses}")  # shown with -s

    # One job per Idempotency-Key, whoever sent it and however often.
    accepted = {a.job_id for a in answers if a.status == 202}
    assert len(accepted) == statuses[202]  # no id answered twice as created
    by_key: dict[tuple[str, str], set[str]] = {}
    for a in answers:
        if a.key and a.job_id:
            by_key.setdefault((a.owner, a.key), set()).add(a.job_id)
    assert all(len(ids) == 1 for ids in by_key.values()), by_key
    replayed = {a.job_id for a in answers if a.status == 200}
    assert replayed <= accepted
    assert statuses[200] > 0  # the repeats of accepted keyed requests were answered as such

    # None lost: every accepted job reaches succeeded; each owner's listing holds exactly its.
    def all_succeeded() -> bool:
        for owner in OWNERS:
            listing = cluster.client.get(
                "/v1/jobs", params={"limit": 200}, headers=auth_headers(keys[owner])
            ).json()
            if any(job["status"] != "succeeded" for job in listing["items"]):
                return False
        return True

    cluster.wait_for(all_succeeded, FINISH_TIMEOUT, "every accepted job to succeed")
    for owner in OWNERS:
        listing = cluster.client.get(
            "/v1/jobs", params={"limit": 200}, headers=auth_headers(keys[owner])
        ).json()
        mine = {a.job_id for a in answers if a.owner == owner and a.status == 202}
        assert {job["id"] for job in listing["items"]} == mine, owner
        assert listing["total"] == len(mine)
        assert {job["status"] for job in listing["items"]} == {"succeeded"}

    # None twice: the database holds exactly the accepted jobs, one per key, each run done.
    engine = create_engine(cluster.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT j.id::text, j.idempotency_key, j.status, r.status, r.steps_done "
                    "FROM job j JOIN run r ON r.job_id = j.id WHERE j.owner = ANY(:owners)"
                ),
                {"owners": list(OWNERS)},
            ).all()
    finally:
        engine.dispose()
    assert sorted(row[0] for row in rows) == sorted(accepted)  # one run each, no extra job
    stored_keys = [row[1] for row in rows if row[1] is not None]
    assert len(stored_keys) == len(set(stored_keys)) == len(by_key)
    assert {(row[2], row[3]) for row in rows} == {("succeeded", "succeeded")}
    # Each run trained its whole epoch: ceil(1,077 training samples of digits / 128) steps.
    assert {row[4] for row in rows} == {math.ceil(1077 / 128)}

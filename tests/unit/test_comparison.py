"""Across jobs (services/comparison.py): GET /v1/compare aligns any of the caller's jobs by
optimizer label, GET /v1/optimizers/{label}/history reads one label over the caller's jobs
on a data set in one SQL statement, GET /v1/jobs filters by best optimizer, and the CLI's
``compare`` and ``history`` print them. On SQLite; the ones marked integration on
PostgreSQL too."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from services import auth, comparison
from services.api.app import create_app
from services.db import store
from services.db.session import get_engine, unit_of_work
from services.spec import JobSpec
from tests.support import local_client
from tests.unit.test_execution import stored_job
from workers.execution import execute_job


@pytest.fixture
def client(embedded_home: Path) -> Iterator[TestClient]:
    with local_client(create_app()) as client:
        yield client


def as_owner(app: Any, owner: str) -> TestClient:
    return local_client(app, headers={"Authorization": f"Bearer {auth.create_key(owner).token}"})


# --- planted jobs: a stored summary of known numbers ----------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def summary_row(label: str, rank: int | None, **values: Any) -> dict[str, Any]:
    """A summary row as services/summary.py stores it (the values given, the rest null)."""
    reached = values.pop("reached", 1)
    return {
        "label": label,
        "optimizer": label,
        "runs": 1,
        "target_reached": f"{reached}/1",
        "success_rate": float(reached),
        "diverged": 0,
        "rank": rank,
        "stats": {},
        "paired": None,
        **values,
    }


def planted(
    rows: list[dict[str, Any]],
    *,
    dataset: dict[str, Any] | None = None,
    model: str = "mlp",
    owner: str = "local",
    day: int = 0,
    status: str = "succeeded",
    epochs: int = 3,
    lr: dict[str, float] | None = None,
) -> str:
    """A job whose runs are the rows' labels (optimizer = label) and whose stored summary is
    the rows, created ``day`` days after T0, ending in ``status``."""
    spec = JobSpec.model_validate(
        {
            "name": f"planted {owner} day {day}",
            "dataset": dataset or {"name": "digits"},
            "model": {"name": model},
            "optimizers": [
                {
                    "name": row["label"],
                    **({"lr": lr[row["label"]]} if lr and row["label"] in lr else {}),
                }
                for row in rows
            ],
            "epochs": epochs,
        }
    )
    best = next((row["label"] for row in rows if row["rank"] == 1), None)
    summary = {
        "task": "classification",
        "target": {"metric": "val_accuracy", "value": 0.9},
        "best": best,
        "optimizers": rows,
    }
    with unit_of_work() as session:
        job = store.create_job(session, spec, owner=owner)
        job.created_at = T0 + timedelta(days=day)
        session.flush()
        if status == "succeeded":
            store.finish_job(session, job.id, summary=summary)
        elif status == "failed":
            store.finish_job(session, job.id, error="planted failure", summary=summary)
        return str(job.id)


# --- compare ----------------------------------------------------------------------------------


def test_compare_aligns_two_trained_jobs_by_label_with_nulls_and_their_setups(
    client: TestClient,
) -> None:
    first = stored_job(optimizers=[{"name": "sgd", "lr": 0.1}, {"name": "adam"}])
    second = stored_job(optimizers=[{"name": "adam"}, {"name": "rmsprop"}], epochs=3)
    assert execute_job(first) == "succeeded" and execute_job(second) == "succeeded"

    response = client.get("/v1/compare", params={"jobs": f"{first}, {second}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [job["id"] for job in body["jobs"]] == [first, second]
    assert [job["epochs"] for job in body["jobs"]] == [2, 3]
    assert body["differs"] == ["epochs"]  # same data set, model, batch size and target
    for job in body["jobs"]:
        assert job["dataset"]["name"] == "classification" and job["model"] == {"name": "linear"}
        assert job["finished"] and job["status"] == "succeeded" and job["task"] == "classification"
        assert job["target"] == {"metric": "val_accuracy", "value": 0.9}  # the default
    # The union of labels, first job's order first; null where a job has no such label.
    assert [row["label"] for row in body["rows"]] == ["sgd", "adam", "rmsprop"]
    cells = {row["label"]: row["cells"] for row in body["rows"]}
    assert cells["sgd"][1] is None and cells["rmsprop"][0] is None
    assert None not in cells["adam"]
    # Each cell is the job's own summary row, as GET /v1/jobs/{id}/summary shows it.
    for index, job_id in enumerate((first, second)):
        summary = client.get(f"/v1/jobs/{job_id}/summary").json()
        assert summary["best"] == body["jobs"][index]["best"]
        for row in summary["optimizers"]:
            assert cells[row["label"]][index] == row
    # adam trained 2 epochs in one job and 3 in the other, from the same weights and batches:
    # its third epoch adds steps (linear, 120 training samples, batch 40: 3 steps an epoch).
    assert cells["adam"][0]["runs"] == cells["adam"][1]["runs"] == 1
    assert cells["adam"][0]["best_train_loss"] >= cells["adam"][1]["best_train_loss"]


def test_compare_names_what_is_wrong_with_the_ids_as_a_422(client: TestClient) -> None:
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    cases = {
        "": "name the jobs to compare",
        f"{one},": "an empty id",
        f"{one},nope": "'nope' is not a job id",
        f"{one},{two},{one.upper()}": "is named twice",
        ",".join(str(uuid.uuid4()) for _ in range(9)): "at most 8 can be compared",
        ",".join(str(uuid.uuid4()) for _ in range(20)): "20 jobs named",
    }
    for jobs, said in cases.items():
        response = client.get("/v1/compare", params={"jobs": jobs})
        assert response.status_code == 422, (jobs, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        error = response.json()["errors"][0]
        assert error["field"] == "jobs" and said in error["message"], (jobs, error)
    missing = client.get("/v1/compare")
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "query.jobs"


def test_another_owner_s_job_is_a_404_exactly_as_get_job_answers(embedded_home: Path) -> None:
    app = create_app()
    mine = planted([summary_row("adam", 1)])
    bobs = planted([summary_row("adam", 1)], owner="bob")
    with local_client(app) as client:
        response = client.get("/v1/compare", params={"jobs": f"{mine},{bobs}"})
        direct = client.get(f"/v1/jobs/{bobs}")
        unknown = str(uuid.uuid4())
        absent = client.get("/v1/compare", params={"jobs": f"{mine},{unknown}"})
        absent_direct = client.get(f"/v1/jobs/{unknown}")
    assert response.status_code == direct.status_code == 404
    assert response.json()["detail"] == direct.json()["detail"] == f"no job with id '{bobs}'"
    assert absent.json()["detail"] == absent_direct.json()["detail"]
    assert "bob" not in response.text
    with as_owner(app, "bob") as bob:
        assert bob.get("/v1/compare", params={"jobs": f"{bobs},{mine}"}).status_code == 404
        alone = bob.get("/v1/compare", params={"jobs": bobs})
        assert alone.status_code == 200 and [j["id"] for j in alone.json()["jobs"]] == [bobs]


def test_a_queued_job_compares_with_its_summary_so_far_and_setups_that_differ(
    client: TestClient,
) -> None:
    done = planted([summary_row("sgd", 2), summary_row("adam", 1)], model="linear")
    queued = client.post(
        "/v1/jobs",
        json={
            "name": "queued",
            "dataset": {"name": "iris"},
            "model": {"name": "mlp", "hidden": [8]},
            "optimizers": [{"name": "adam"}, {"name": "momentum"}],
            "target": {"metric": "val_accuracy", "value": 0.8},
        },
    ).json()["id"]
    body = client.get("/v1/compare", params={"jobs": f"{queued},{done}"}).json()
    assert [job["finished"] for job in body["jobs"]] == [False, True]
    assert body["differs"] == ["dataset", "model", "epochs", "target"]  # both batch 64
    assert [row["label"] for row in body["rows"]] == ["adam", "momentum", "sgd"]
    cells = {row["label"]: row["cells"] for row in body["rows"]}
    assert cells["momentum"][1] is None and cells["sgd"][0] is None
    assert cells["adam"][0]["runs"] == 1 and cells["adam"][0]["target_reached"] == "0/1"
    assert cells["adam"][1]["rank"] == 1


# --- history ----------------------------------------------------------------------------------


def test_history_lists_the_label_over_the_caller_s_succeeded_jobs_with_an_aggregate(
    embedded_home: Path,
) -> None:
    app = create_app()
    row = summary_row
    # The caller's jobs on digits with adam: ranks 1, 3, 1; values planted.
    a = planted(
        [
            row("adam", 1, best_val_accuracy=0.95, final_train_loss=0.10, steps_to_target=80.0),
            row("sgd", 2),
        ],
        day=1,
        lr={"adam": 0.001},
    )
    b = planted(
        [
            row("sgd", 1),
            row("momentum", 1),
            row("adam", 3, best_val_accuracy=0.90, final_train_loss=0.30, reached=0),
        ],
        day=2,
        lr={"adam": 0.01},
    )
    c = planted(
        [row("adam", 1, best_val_accuracy=0.97, final_train_loss=0.05, steps_to_target=40.0)],
        day=3,
        model="linear",
        epochs=5,
        lr={"adam": 0.001},
    )
    # What must stay out: another data set, a failed job, a job without the label, another
    # owner's job (the best of all), a queued job.
    planted([row("adam", 1, best_val_accuracy=0.99)], dataset={"name": "iris"}, day=4)
    planted([row("adam", 1, best_val_accuracy=0.99)], status="failed", day=5)
    planted([row("sgd", 1)], day=6)
    bobs = planted([row("adam", 1, best_val_accuracy=0.999)], owner="bob", day=7)
    planted([row("adam", None)], status="queued", day=8)

    with local_client(app) as client:
        response = client.get("/v1/optimizers/adam/history", params={"dataset": "digits"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert [item["job_id"] for item in body["items"]] == [c, b, a]  # newest first
        assert bobs not in response.text and "bob" not in response.text
        first = body["items"][2]
        assert first["model"]["name"] == "mlp" and first["model"]["hidden"] == [128]
        assert first["epochs"] == 3 and first["labels"] == 2 and first["task"] == "classification"
        assert first["hyperparameters"]["lr"] == 0.001
        assert body["items"][1]["hyperparameters"]["lr"] == 0.01
        assert first["row"]["best_val_accuracy"] == 0.95 and first["row"]["rank"] == 1
        assert body["items"][0]["epochs"] == 5
        aggregate = body["aggregate"]
        assert aggregate["jobs"] == 3 and aggregate["ranked"] == 3
        assert aggregate["ranked_first"] == 2 and aggregate["first_share"] == pytest.approx(2 / 3)
        assert aggregate["mean_success_rate"] == pytest.approx(2 / 3)
        accuracy = aggregate["metrics"]["best_val_accuracy"]
        assert accuracy == {"n": 3, "median": 0.95, "min": 0.90, "max": 0.97}
        loss = aggregate["metrics"]["final_train_loss"]
        assert loss == {"n": 3, "median": 0.10, "min": 0.05, "max": 0.30}
        steps = aggregate["metrics"]["steps_to_target"]  # b never reached it: over 2 jobs
        assert steps == {"n": 2, "median": 60.0, "min": 40.0, "max": 80.0}
        assert aggregate["metrics"]["final_distance"] == {
            "n": 0,
            "median": None,
            "min": None,
            "max": None,
        }
        assert body["truncated"] is False

        # The model filter, the limit (newest kept), a label nobody trained.
        mlp = client.get(
            "/v1/optimizers/adam/history", params={"dataset": "digits", "model": "mlp"}
        )
        assert [item["job_id"] for item in mlp.json()["items"]] == [b, a]
        newest = client.get(
            "/v1/optimizers/adam/history", params={"dataset": "digits", "limit": 2}
        ).json()
        assert [item["job_id"] for item in newest["items"]] == [c, b] and newest["truncated"]
        none = client.get("/v1/optimizers/lion/history", params={"dataset": "digits"}).json()
        assert none["items"] == [] and none["aggregate"]["jobs"] == 0
        assert none["aggregate"]["first_share"] is None

    with as_owner(app, "bob") as bob:  # and bob sees his own only
        his = bob.get("/v1/optimizers/adam/history", params={"dataset": "digits"}).json()
        assert [item["job_id"] for item in his["items"]] == [bobs]


def test_a_study_s_history_row_carries_its_best_trial_s_setting_not_a_trial_s(
    client: TestClient,
) -> None:
    """A tuning study's label has many runs: its trials (each its own sampled lr) first, then
    the reruns of the best trial's setting. The history shows the rerun's setting, and the
    one-shot baseline is a label of its own (unranked)."""
    from services.db.models import BASELINE, RERUN, Run

    spec = JobSpec.model_validate(
        {
            "name": "study",
            "dataset": {"name": "digits"},
            "model": {"name": "mlp"},
            "optimizers": [{"name": "adam", "search": {"lr": {"log_uniform": [1e-4, 1e-1]}}}],
            "tuning": {"trials": 3, "rerun_seeds": 2},
        }
    )
    with unit_of_work() as session:
        job = store.create_job(session, spec)
        trials = {run.hyperparameters["lr"] for run in job.runs}
        assert len(trials) == 3 and 0.0123 not in trials
        base = dict(job.runs[0].hyperparameters)
        for seed in (1, 2):
            job.runs.append(
                Run(
                    label="adam",
                    optimizer="adam",
                    seed=seed,
                    role=RERUN,
                    hyperparameters={**base, "lr": 0.0123},
                    trial=1,
                )
            )
            job.runs.append(
                Run(
                    label="adam:one-shot",
                    optimizer="adam",
                    seed=seed,
                    role=BASELINE,
                    hyperparameters={**base, "lr": 0.001},
                )
            )
        session.flush()
        tuned = {**summary_row("adam", 1, best_val_accuracy=0.97), "role": "tuned"}
        one_shot = {
            **summary_row("adam:one-shot", None, best_val_accuracy=0.93),
            "role": "one-shot",
        }
        store.finish_job(
            session,
            job.id,
            summary={
                "task": "classification",
                "target": {"metric": "val_accuracy", "value": 0.9},
                "best": "adam",
                "optimizers": [tuned, one_shot],
            },
        )
    url = "/v1/optimizers/{}/history"
    [item] = client.get(url.format("adam"), params={"dataset": "digits"}).json()["items"]
    assert item["hyperparameters"]["lr"] == 0.0123
    assert item["row"]["role"] == "tuned" and item["labels"] == 1
    baseline = client.get(url.format("adam:one-shot"), params={"dataset": "digits"}).json()
    [item] = baseline["items"]
    assert item["hyperparameters"]["lr"] == 0.001 and item["row"]["rank"] is None
    assert baseline["aggregate"]["ranked"] == 0 and baseline["aggregate"]["first_share"] is None


def npz() -> bytes:
    buffer = io.BytesIO()
    x = np.random.default_rng(0).normal(size=(40, 3))
    np.savez(buffer, x=x, y=(x[:, 0] > 0).astype(int))
    return buffer.getvalue()


def test_history_errors_and_uploaded_data_sets_by_id(embedded_home: Path) -> None:
    app = create_app()
    with local_client(app) as client:
        upload = client.post("/v1/datasets", files={"file": ("d.npz", npz())}).json()["id"]
        on_upload = planted([summary_row("adam", 1)], dataset={"name": "upload", "id": upload})
        planted([summary_row("adam", 1)])  # on digits: not the upload's
        url = "/v1/optimizers/adam/history"
        mine = client.get(url, params={"dataset": upload}).json()
        assert [item["job_id"] for item in mine["items"]] == [on_upload]
        for params, field, said in (
            ({"dataset": "digitz"}, "dataset", "use one of"),
            ({"dataset": "upload"}, "dataset", "an uploaded data set's id"),
            ({"dataset": "digits", "model": "transformer"}, "model", "use one of"),
        ):
            response = client.get(url, params=params)
            assert response.status_code == 422, response.text
            error = response.json()["errors"][0]
            assert error["field"] == field and said in error["message"], error
        assert client.get(url).json()["errors"][0]["field"] == "query.dataset"
    with as_owner(app, "bob") as bob:  # alice's upload: not found, as GET /v1/datasets/{id}
        response = bob.get(url, params={"dataset": upload})
        assert response.status_code == 404
        assert response.json()["detail"] == bob.get(f"/v1/datasets/{upload}").json()["detail"]


def statements_during(call: Any) -> tuple[Any, list[str]]:
    """What ``call()`` returns, and the SQL statements it sent."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        return call(), sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_the_history_is_one_sql_statement_whatever_the_number_of_jobs(db: str) -> None:
    """Not one query per job (N+1): the jobs, their summaries and the label's hyperparameters
    come in one statement, on SQLite and PostgreSQL alike."""
    query = comparison.HistoryQuery(label="adam", dataset="digits")
    counts = {}
    for jobs in (1, 6):
        while len(comparison.history(query, owner="local")["items"]) < jobs:
            planted(
                [summary_row("adam", 1, best_val_accuracy=0.9), summary_row("sgd", 2)],
                lr={"adam": 0.002},
            )
        result, sent = statements_during(lambda: comparison.history(query, owner="local"))
        assert len(result["items"]) == jobs
        assert all(item["hyperparameters"]["lr"] == 0.002 for item in result["items"])
        counts[jobs] = [s for s in sent if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(counts[1]) == len(counts[6]) == 1, counts


def test_compare_reads_finished_jobs_in_one_statement(db: str) -> None:
    ids = [uuid.UUID(planted([summary_row("adam", 1)], day=day)) for day in range(4)]
    result, sent = statements_during(lambda: comparison.compare(ids, owner="local"))
    assert [job["id"] for job in result["jobs"]] == ids
    assert len([s for s in sent if s.lstrip().upper().startswith("SELECT")]) == 1, sent


# --- the job list's best-optimizer filter ------------------------------------------------------


def test_the_job_list_filters_by_best_optimizer(db: str) -> None:
    adam = planted([summary_row("sgd", 2), summary_row("adam", 1)])
    sgd = planted([summary_row("sgd", 1), summary_row("adam", 2)], model="linear")
    planted([summary_row("adam", 1)], status="queued")  # no best until it has finished
    with local_client(create_app()) as client:

        def ids(**params: str) -> list[str]:
            page = client.get("/v1/jobs", params=params).json()
            assert page["total"] == len(page["items"]), page
            return [job["id"] for job in page["items"]]

        assert ids(best="adam") == [adam]
        assert ids(best="sgd") == [sgd]
        assert ids(best="sgd", model="mlp") == []
        assert ids(best="lion") == []
        assert len(ids()) == 3


# --- the CLI ---------------------------------------------------------------------------------


def test_the_cli_prints_the_aligned_table_and_the_history(
    embedded_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli import compare as commands
    from services.cli import main
    from services.client import ApiClient

    app = create_app()

    def in_process(url: str | None, key: str | None) -> ApiClient:
        api = ApiClient("http://127.0.0.1:8000")
        api.http = local_client(app)
        return api

    monkeypatch.setattr(commands, "client", in_process)
    monkeypatch.setattr("services.cli.base.client", in_process)
    row = summary_row
    first = planted(
        [
            row("sgd", 2, best_val_accuracy=0.9),
            row("adam", 1, best_val_accuracy=0.95, steps_to_target=80.0),
        ],
        lr={"adam": 0.001},
    )
    second = planted(
        [row("adam", 1, best_val_accuracy=0.97, steps_to_target=40.0), row("nag", 2)],
        epochs=5,
        day=1,
        lr={"adam": 0.003},
    )

    assert main(["compare", first[:8], second]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"A: {first} ") and "digits, mlp [128], 3 epochs" in lines[0]
    assert lines[1].startswith(f"B: {second} ") and "5 epochs" in lines[1]
    assert lines[2] == "differs: epochs (not comparable as they stand)"
    header = next(line for line in lines if line.startswith("optimizer"))
    assert "A best val acc" in header and "B rank" in header
    table = {
        line.split()[0]: line.split()
        for line in lines
        if line.split() and line.split()[0] in ("sgd", "adam", "nag")
    }
    assert list(table) == ["sgd", "adam", "nag"]
    assert table["adam"][1] == "95.00%" and "97.00%" in table["adam"]
    assert table["sgd"][-5:] == ["-"] * 5 and table["nag"][1:6] == ["-"] * 5

    assert main(["compare", first, second, "--json"]) == 0
    assert [r["label"] for r in json.loads(capsys.readouterr().out)["rows"]] == [
        "sgd",
        "adam",
        "nag",
    ]

    assert main(["history", "adam", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("adam on digits: 2 succeeded jobs, newest first")
    header = next(line for line in out.splitlines() if line.startswith("job"))
    assert "lr" in header.split() and "betas" not in header  # only what differs is a column
    rows = [line.split() for line in out.splitlines() if line[:8] in (first[:8], second[:8])]
    assert [r[0] for r in rows] == [second[:8], first[:8]]
    assert rows[0][-1] == "1/2" and "0.003" in rows[0]
    assert "ranked first in 2 of 2 (100%); mean success rate 100%" in out
    assert "the same in every job:" in out

    assert main(["history", "adam", "--dataset", "digitz"]) == 4  # the API's 422
    assert "use one of" in capsys.readouterr().err

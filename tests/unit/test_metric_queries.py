"""Metric queries (GET /v1/jobs/{id}/metrics) on SQLite and on PostgreSQL: runs, fields and
step ranges, keyset pages, CSV, and downsampling that keeps a one-step spike."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.db import metric_queries, metric_writes, store
from services.db.metric_queries import SeriesQuery
from services.db.models import STEP_FIELDS
from services.db.session import unit_of_work
from services.errors import InvalidSpec
from services.export import RUN_COLUMNS
from services.spec import LECTURE_SPEC, JobSpec
from tests.support import local_client

SPIKE, DIP = 1.0e6, -1.0e6


def smooth_loss(step: int) -> float:
    return 1.0 + 1.0 / step


def make_job(steps: dict[str, int], seeds: tuple[int, ...] = (0,)) -> tuple[str, list[int]]:
    """A job with one optimizer entry per label (its step count given), stored with steps
    1..n and an epoch every 100 steps. Returns the job id and its run ids in job order."""
    spec = copy.deepcopy(LECTURE_SPEC)
    spec["optimizers"] = [{"name": "sgd", "lr": 0.05, "label": label} for label in steps]
    spec["seeds"] = list(seeds)
    with unit_of_work() as session:
        job = store.create_job(session, JobSpec.model_validate(spec))
        for run in job.runs:
            n = steps[run.label]
            metric_writes.write_steps(
                session,
                run.id,
                [
                    {
                        "step": s,
                        "epoch": 1 + (s - 1) // 100,
                        "loss": smooth_loss(s),
                        "accuracy": s / n,
                        "lr": 0.05,
                        "grad_norm": float(run.id),
                        "train_seconds": 0.001 * s,
                    }
                    for s in range(1, n + 1)
                ],
            )
            metric_writes.write_epochs(
                session,
                run.id,
                [
                    {
                        "epoch": e,
                        "step": 100 * e,
                        "train_loss": 1.0 / e,
                        "train_accuracy": 0.5,
                        "val_loss": 2.0 / e,
                        "val_accuracy": 0.4,
                        "train_seconds": 0.1 * e,
                    }
                    for e in range(1, n // 100 + 1)
                ],
            )
        return str(job.id), [run.id for run in job.runs]


def set_loss(run_id: int, step: int, value: float) -> None:
    from sqlalchemy import update

    from services.db.models import StepMetric

    with unit_of_work() as session:
        session.execute(
            update(StepMetric)
            .where(StepMetric.run_id == run_id, StepMetric.step == step)
            .values(loss=value)
        )


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    with local_client(create_app()) as client:
        yield client


def fetch(run_ids: list[int], **options: Any) -> metric_queries.SeriesPage:
    with unit_of_work() as session:
        return metric_queries.fetch(session, run_ids, SeriesQuery(**options))


def expected_buckets(
    steps: list[int], values: list[float], n: int
) -> list[tuple[int, int, float, float, float]]:
    """The documented bucketing, in Python: (last step, first step, last, min, max)."""
    lo, hi = steps[0], steps[-1]
    buckets: dict[int, list[tuple[int, float]]] = {}
    for step, value in zip(steps, values, strict=True):
        buckets.setdefault((step - lo) * n // (hi - lo + 1), []).append((step, value))
    return [
        (b[-1][0], b[0][0], b[-1][1], min(v for _, v in b), max(v for _, v in b))
        for _, b in sorted(buckets.items())
    ]


# --- raw points ----------------------------------------------------------------------------


def test_raw_points_by_run_field_and_step_range(client: TestClient) -> None:
    job_id, (a, b, c) = make_job({"a": 50, "b": 30, "c": 20})
    body = client.get(
        f"/v1/jobs/{job_id}/metrics",
        params={"runs": f"a,{c}", "fields": "loss,lr", "from_step": 10, "to_step": 25},
    ).json()
    assert body["granularity"] == "step" and body["next_cursor"] is None
    assert [(r["run_id"], r["label"]) for r in body["runs"]] == [(a, "a"), (c, "c")]
    series_a, series_c = (r["series"] for r in body["runs"])
    assert list(series_a) == ["step", "loss", "lr"]
    assert series_a["step"] == list(range(10, 26))
    assert series_c["step"] == list(range(10, 21))
    assert series_a["loss"] == [smooth_loss(s) for s in range(10, 26)]
    # repeated parameters work as well as commas; the key always comes along
    repeated = client.get(
        f"/v1/jobs/{job_id}/metrics", params=[("runs", "b"), ("fields", "accuracy")]
    ).json()
    assert [r["run_id"] for r in repeated["runs"]] == [b]
    assert list(repeated["runs"][0]["series"]) == ["step", "accuracy"]
    assert len(repeated["runs"][0]["series"]["step"]) == 30


def test_a_label_selects_the_run_of_every_seed(client: TestClient) -> None:
    job_id, _ = make_job({"a": 5, "b": 5}, seeds=(0, 1))
    body = client.get(f"/v1/jobs/{job_id}/metrics", params={"runs": "b"}).json()
    assert [(r["label"], r["seed"]) for r in body["runs"]] == [("b", 0), ("b", 1)]


def test_epochs_filtered_by_step(client: TestClient) -> None:
    job_id, _ = make_job({"a": 1000})
    body = client.get(
        f"/v1/jobs/{job_id}/metrics",
        params={"granularity": "epoch", "fields": "val_loss", "from_step": 250, "to_step": 600},
    ).json()
    series = body["runs"][0]["series"]
    assert series == {"epoch": [3, 4, 5, 6], "val_loss": [2.0 / e for e in (3, 4, 5, 6)]}


def test_every_field_by_default_and_the_old_series_function(database: str) -> None:
    _, (a,) = make_job({"a": 12})
    with unit_of_work() as session:
        columns = metric_queries.series(session, [a], "step")[a]
        epochs = metric_queries.series(session, [a], "epoch")[a]
    assert list(columns) == list(STEP_FIELDS)
    assert columns["step"] == list(range(1, 13)) and columns["x"] == [None] * 12
    assert epochs["epoch"] == [] and epochs["val_accuracy"] == []


def test_not_finite_values_are_null_in_json(client: TestClient) -> None:
    job_id, (a,) = make_job({"a": 3})
    set_loss(a, 2, math.inf)  # a diverged step (SQLite cannot store NaN in a NOT NULL column)
    set_loss(a, 3, -math.inf)
    body = client.get(f"/v1/jobs/{job_id}/metrics", params={"fields": "loss"}).json()
    assert body["runs"][0]["series"]["loss"] == [2.0, None, None]


def test_pages_walk_every_row_exactly_once(client: TestClient) -> None:
    job_id, ids = make_job({"a": 23, "b": 1, "c": 17})
    seen: list[tuple[int, int]] = []
    params: dict[str, Any] = {"limit": 5, "fields": "loss", "from_step": 1}
    pages = 0
    while True:
        body = client.get(f"/v1/jobs/{job_id}/metrics", params=params).json()
        pages += 1
        assert [r["run_id"] for r in body["runs"]] == ids  # every run, every page
        page = [(r["run_id"], s) for r in body["runs"] for s in r["series"]["step"]]
        assert 1 <= len(page) <= 5
        seen += page
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    everything = [
        (run_id, s) for run_id, n in zip(ids, (23, 1, 17), strict=True) for s in range(1, n + 1)
    ]
    assert seen == everything  # in order, none twice, none missed
    assert pages == math.ceil(len(everything) / 5)


def test_pages_of_epochs_and_an_exact_last_page(database: str) -> None:
    _, (a, b) = make_job({"a": 400, "b": 200})
    first = fetch([a, b], granularity="epoch", limit=3)
    assert first.columns[a]["epoch"] == [1, 2, 3] and first.columns[b]["epoch"] == []
    assert first.next_cursor is not None
    second = fetch([a, b], granularity="epoch", limit=3, cursor=first.next_cursor)
    assert second.columns[a]["epoch"] == [4] and second.columns[b]["epoch"] == [1, 2]
    assert second.next_cursor is None  # exactly six rows: no empty page after
    with pytest.raises(InvalidSpec, match="cursor: belongs to granularity=epoch"):
        fetch([a, b], granularity="step", limit=3, cursor=first.next_cursor)


# --- CSV -----------------------------------------------------------------------------------


def test_csv_has_one_row_per_point(client: TestClient) -> None:
    job_id, (a, b) = make_job({"a": 30, "b": 20}, seeds=(7,))
    response = client.get(
        f"/v1/jobs/{job_id}/metrics",
        params={"format": "csv", "fields": "loss,accuracy", "to_step": 25},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.text)))
    # whose row it is, as in `optbench export` (one definition: services.export.RUN_COLUMNS)
    assert table[0] == [*RUN_COLUMNS, "step", "loss", "accuracy"]
    assert len(table) == 1 + 25 + 20
    with unit_of_work() as session:
        hyper = {run.id: run.hyperparameters for run in store.get_job(session, job_id).runs}
    name, dataset, model = LECTURE_SPEC["name"], "digits", "mlp"
    head = [job_id, name, dataset, model]
    assert table[1][:8] == [*head, str(a), "a", "sgd", "7"]
    assert json.loads(table[1][8]) == hyper[a] and hyper[a]["lr"] == 0.05
    assert table[1][8] == json.dumps(hyper[a], sort_keys=True, separators=(",", ":"))
    assert table[1][9:] == ["1", repr(smooth_loss(1)), repr(1 / 30)]
    assert table[-1][:8] == [*head, str(b), "b", "sgd", "7"] and table[-1][9] == "20"
    assert json.loads(table[-1][8]) == hyper[b]


def test_csv_pages_and_downsampled_csv(client: TestClient) -> None:
    job_id, _ = make_job({"a": 1000})
    paged = client.get(
        f"/v1/jobs/{job_id}/metrics", params={"format": "csv", "fields": "loss", "limit": 10}
    )
    assert len(paged.text.splitlines()) == 11
    cursor = paged.headers["x-next-cursor"]
    after = client.get(
        f"/v1/jobs/{job_id}/metrics",
        params={"format": "csv", "fields": "loss", "limit": 10, "cursor": cursor},
    )
    assert next(csv.DictReader(io.StringIO(after.text)))["step"] == "11"
    # 20 points: more than the run's 16 rollup blocks, so PostgreSQL scans the rows too
    small = client.get(
        f"/v1/jobs/{job_id}/metrics",
        params={"format": "csv", "fields": "loss", "max_points": 20},
    )
    table = list(csv.reader(io.StringIO(small.text)))
    assert table[0] == [*RUN_COLUMNS, "step", "step_min", "loss", "loss_min", "loss_max"]
    assert len(table) == 21 and table[1][9:11] == ["50", "1"]
    assert table[1][:2] == [job_id, LECTURE_SPEC["name"]]


# --- downsampling --------------------------------------------------------------------------


def test_downsampling_keeps_a_one_step_spike_and_dip(client: TestClient) -> None:
    # 200 points: more than a's 157 rollup blocks, so PostgreSQL scans the rows too (the
    # rollup, and its block-aligned buckets, are tested in test_metric_rollup.py)
    job_id, (a, _) = make_job({"a": 10_000, "b": 3_000})
    set_loss(a, 4321, SPIKE)
    set_loss(a, 7777, DIP)
    body = client.get(
        f"/v1/jobs/{job_id}/metrics", params={"max_points": 200, "fields": "loss"}
    ).json()
    assert body["max_points"] == 200
    series_a, series_b = (r["series"] for r in body["runs"])
    assert list(series_a) == ["step", "step_min", "loss", "loss_min", "loss_max"]
    assert len(series_a["step"]) <= 200 and len(series_b["step"]) <= 200
    # the spike is in the maximum of the bucket that holds step 4321, the dip in a minimum
    spiked = series_a["loss_max"].index(SPIKE)
    assert series_a["step_min"][spiked] <= 4321 <= series_a["step"][spiked]
    dipped = series_a["loss_min"].index(DIP)
    assert series_a["step_min"][dipped] <= 7777 <= series_a["step"][dipped]
    assert series_a["loss"][spiked] != SPIKE  # the last value alone would have hidden it
    # every bucket is what the documented formula gives, run by run (two key ranges here)
    for series, n in ((series_a, 10_000), (series_b, 3_000)):
        steps = list(range(1, n + 1))
        losses = [smooth_loss(s) for s in steps]
        if n == 10_000:
            losses[4320], losses[7776] = SPIKE, DIP
        got = list(
            zip(
                series["step"],
                series["step_min"],
                series["loss"],
                series["loss_min"],
                series["loss_max"],
                strict=True,
            )
        )
        assert got == expected_buckets(steps, losses, 200)


def test_downsampling_a_step_range_and_more_points_than_rows(database: str) -> None:
    _, (a,) = make_job({"a": 500})
    page = fetch([a], fields=["loss", "accuracy"], from_step=101, to_step=400, max_points=7)
    columns = page.columns[a]
    assert len(columns["step"]) == 7
    assert columns["step_min"][0] == 101 and columns["step"][-1] == 400
    assert columns["accuracy_max"][-1] == 400 / 500 and columns["loss_max"][0] == smooth_loss(101)
    whole = fetch([a], fields=["loss"], from_step=491, max_points=1000).columns[a]
    assert whole["step"] == whole["step_min"] == list(range(491, 501))
    assert whole["loss"] == whole["loss_min"] == whole["loss_max"]
    one = fetch([a], fields=["loss"], max_points=1).columns[a]
    assert (one["step_min"], one["step"], one["loss_max"]) == ([1], [500], [smooth_loss(1)])
    empty = fetch([a], fields=["loss"], from_step=10_000, max_points=10).columns[a]
    assert empty == {"step": [], "step_min": [], "loss": [], "loss_min": [], "loss_max": []}


def test_downsampled_epochs(database: str) -> None:
    _, (a,) = make_job({"a": 1000})
    columns = fetch([a], granularity="epoch", fields=["train_loss"], max_points=5).columns[a]
    assert columns["epoch"] == [2, 4, 6, 8, 10] and columns["epoch_min"] == [1, 3, 5, 7, 9]
    assert columns["train_loss_max"] == [1.0, 1 / 3, 1 / 5, 1 / 7, 1 / 9]
    assert columns["train_loss"] == [1 / 2, 1 / 4, 1 / 6, 1 / 8, 1 / 10]


# --- bad requests --------------------------------------------------------------------------


def test_an_unknown_field_names_the_allowed_ones(database: str) -> None:
    _, (a,) = make_job({"a": 3})
    with pytest.raises(InvalidSpec) as raised:
        fetch([a], fields=["loss", "los"])
    assert raised.value.detail.startswith("fields: unknown field 'los' for granularity=step")
    assert "grad_norm" in raised.value.detail
    with pytest.raises(InvalidSpec, match="train_loss"):
        fetch([a], granularity="epoch", fields=["loss"])


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"fields": "loss,bogus"}, "fields"),
        ({"runs": "nobody"}, "runs"),
        ({"granularity": "week"}, "granularity"),
        ({"max_points": 0}, "max_points"),
        ({"max_points": "many"}, "max_points"),
        ({"limit": 0}, "limit"),
        ({"from_step": -1}, "from_step"),
        ({"from_step": 9, "to_step": 3}, "to_step"),
        ({"cursor": "not-a-cursor", "limit": 5}, "cursor"),
        ({"max_points": 10, "limit": 5}, "limit"),
        ({"format": "xml"}, "format"),
    ],
)
def test_bad_parameters_are_problems_naming_the_parameter(
    client: TestClient, params: dict[str, Any], parameter: str
) -> None:
    job_id, _ = make_job({"a": 3})
    response = client.get(f"/v1/jobs/{job_id}/metrics", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert parameter in problem["detail"]
    assert any(parameter in error["field"] for error in problem["errors"])


def test_an_unknown_job_is_a_404_in_csv_too(client: TestClient) -> None:
    response = client.get(f"/v1/jobs/{uuid.uuid4()}/metrics", params={"format": "csv"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"

"""The series export and the report's numpy landscapes, on jobs run in-process (the report
page itself: test_report_page.py)."""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.api.app import create_app
from services.db import metric_queries
from services.db.models import EpochMetric, Run, StepMetric
from services.db.session import unit_of_work
from services.export import COLUMNS, RUN_COLUMNS, export_series
from services.report import LANDSCAPES
from tests.conftest import reset_process_state
from tests.support import local_client
from workers.execution import execute_job

LECTURE = {
    "name": "report test: lecture optimizers on digits",
    "dataset": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "hidden": [32]},
    "optimizers": [
        {"name": "gd", "lr": 0.5},
        {"name": "sgd", "lr": 0.05},
        {"name": "momentum", "lr": 0.05, "momentum": 0.9},
        {"name": "adagrad", "lr": 0.05},
        {"name": "adam", "lr": 0.001, "label": "adam.slow:1e-3"},
    ],
    "epochs": 3,
    "batch_size": 64,
    "seeds": [0, 1, 2],
    "target": {"metric": "val_accuracy", "value": 0.9},
}
ROSENBROCK = {
    "name": "report test: rosenbrock",
    "dataset": {"name": "rosenbrock", "start": [-1.5, 2.0]},
    "model": {"name": "point"},
    "optimizers": [
        {"name": "momentum", "lr": 1e-3, "momentum": 0.9},
        {"name": "adam", "lr": 0.05},
        {"name": "rmsprop", "lr": 0.01},
    ],
    "epochs": 300,
    "seeds": [0, 1],
}


@dataclass
class Jobs:
    client: TestClient
    lecture: str
    rosenbrock: str


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    """One lecture-style and one landscape job, run once for the module (embedded default)."""
    from services.db.migrate import upgrade

    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in ("OPTBENCH_DATABASE_URL", "OPTBENCH_BROKER_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("OPTBENCH_HOME", str(tmp_path_factory.mktemp("report") / "home"))
        reset_process_state()
        upgrade()
        with local_client(create_app()) as client:
            ids = []
            for spec in (LECTURE, ROSENBROCK):
                response = client.post("/v1/jobs", json=spec)
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
                execute_job(ids[-1])
                assert client.get(f"/v1/jobs/{ids[-1]}").json()["status"] == "succeeded"
            yield Jobs(client, *ids)
    reset_process_state()


# ---------------------------------------------------------------- helpers


def count_rows(job_id: str) -> tuple[int, int, int]:
    """Runs, step rows and epoch rows stored for the job."""
    with unit_of_work() as session:
        run_ids = list(session.scalars(select(Run.id).where(Run.job_id == uuid.UUID(job_id))))
        steps = session.scalar(
            select(func.count()).select_from(StepMetric).where(StepMetric.run_id.in_(run_ids))
        )
        epochs = session.scalar(
            select(func.count()).select_from(EpochMetric).where(EpochMetric.run_id.in_(run_ids))
        )
    return len(run_ids), int(steps or 0), int(epochs or 0)


def stored_runs(job_id: str) -> dict[str, tuple[int, str, int, dict[str, Any]]]:
    """Per run ``"label/seed"``: its id, optimizer, seed and stored hyperparameters."""
    with unit_of_work() as session:
        runs = session.scalars(select(Run).where(Run.job_id == uuid.UUID(job_id))).all()
        return {
            f"{r.label}/{r.seed}": (r.id, r.optimizer, r.seed, dict(r.hyperparameters))
            for r in runs
        }


# ---------------------------------------------------------------- the report


@pytest.mark.parametrize("name", sorted(LANDSCAPES))
def test_numpy_landscapes_equal_the_engine(name: str) -> None:
    import torch

    from workers.engine.landscapes import LANDSCAPES as ENGINE

    view = LANDSCAPES[name]()
    engine = ENGINE.get(name)()
    points = np.random.default_rng(0).uniform(-3, 3, size=(20, 2))
    ours = view.function(points[:, 0], points[:, 1])
    theirs = [float(engine(torch.tensor(p, dtype=torch.float64))) for p in points]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert view.minima == engine.minima


# ---------------------------------------------------------------- export


def test_export_round_trips_csv_json_and_parquet(jobs: Jobs, tmp_path: Path) -> None:
    for job_id in (jobs.lecture, jobs.rosenbrock):
        runs, steps, epochs = count_rows(job_id)

        written = export_series(job_id, "csv", tmp_path / "series.csv")
        with open(tmp_path / "series.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert written == len(rows) == steps + epochs
        assert list(rows[0]) == list(COLUMNS)
        assert sum(r["granularity"] == "step" for r in rows) == steps
        assert len({r["run_id"] for r in rows}) == runs
        first = rows[0]
        assert first["granularity"] == "step" and first["step"] == "1" and first["epoch"] == "1"
        assert math.isfinite(float(first["loss"])) and first["distance"] == ""

        text = io.StringIO()
        export_series(job_id, "json", text)
        document = json.loads(text.getvalue())
        assert document["job_id"] == job_id and document["spec"]["name"].startswith("report")
        assert document["summary"]["optimizers"]
        for granularity, expected in (("step", steps), ("epoch", epochs)):
            metrics = document["metrics"][granularity]
            served = jobs.client.get(
                f"/v1/jobs/{job_id}/metrics", params={"granularity": granularity}
            ).json()
            assert set(metrics) <= set(served)  # the endpoint's shape (its paging keys aside)
            assert [
                {k: r[k] for k in s if k != "series"}
                for r, s in zip(metrics["runs"], served["runs"], strict=True)
            ] == [{k: r[k] for k in r if k != "series"} for r in served["runs"]]
            # ... and each run entry says whose it is
            spec = document["spec"]
            for run in metrics["runs"]:
                assert set(RUN_COLUMNS) <= set(run)
                assert run["job_id"] == job_id and run["job_name"] == spec["name"]
                assert (run["dataset"], run["model"]) == (
                    spec["dataset"]["name"],
                    spec["model"]["name"],
                )
                stored = stored_runs(job_id)[f"{run['label']}/{run['seed']}"]
                assert (run["run_id"], run["hyperparameters"]) == (stored[0], stored[3])
            with unit_of_work() as session:
                stored = metric_queries.series(
                    session, [r["run_id"] for r in metrics["runs"]], granularity
                )
            assert {r["run_id"]: r["series"] for r in metrics["runs"]} == stored
            assert sum(len(r["series"]["step"]) for r in metrics["runs"]) == expected

        binary = io.BytesIO()
        assert export_series(job_id, "parquet", binary) == steps + epochs
        table = pq.read_table(io.BytesIO(binary.getvalue()))
        assert table.column_names == list(COLUMNS) and table.num_rows == steps + epochs
        kinds = table.column("granularity").to_pylist()
        assert kinds.count("step") == steps and kinds.count("epoch") == epochs
        assert table.column("loss").null_count == epochs  # step-only column
        metadata = table.schema.metadata
        assert metadata[b"optbench.job_id"].decode() == job_id
        assert json.loads(metadata[b"optbench.spec"])["epochs"] in (3, 300)

    # one granularity, to a binary stream
    epochs_only = io.BytesIO()
    _, _, epochs = count_rows(jobs.lecture)
    assert export_series(jobs.lecture, "csv", epochs_only, granularity="epoch") == epochs
    lines = epochs_only.getvalue().decode().splitlines()
    assert len(lines) == epochs + 1 and all(",epoch," in line for line in lines[1:])


def test_exports_of_two_jobs_concatenated_are_told_apart_and_join(
    jobs: Jobs, tmp_path: Path
) -> None:
    import pyarrow as pa

    ids = (jobs.lecture, jobs.rosenbrock)
    specs = {jobs.lecture: LECTURE, jobs.rosenbrock: ROSENBROCK}
    rows: list[dict[str, str]] = []
    tables = []
    runs: list[dict[str, Any]] = []  # the JSON exports' run entries, both jobs
    for job_id in ids:
        export_series(job_id, "csv", tmp_path / f"{job_id}.csv")
        with open(tmp_path / f"{job_id}.csv", newline="") as handle:
            rows += csv.DictReader(handle)
        binary = io.BytesIO()
        export_series(job_id, "parquet", binary)
        tables.append(pq.read_table(io.BytesIO(binary.getvalue())))
        text = io.StringIO()
        export_series(job_id, "json", text, granularity="epoch")
        runs += json.loads(text.getvalue())["metrics"]["epoch"]["runs"]
    assert tables[0].schema.equals(tables[1].schema)  # one schema whatever the optimizers

    # both jobs have a "momentum" run (and seed 0): only job_id tells them apart
    momentum = {r["job_id"] for r in rows if r["label"] == "momentum" and r["seed"] == "0"}
    assert momentum == set(ids)

    # every row, CSV and parquet, says whose it is, as stored
    table = pa.concat_tables(tables)
    assert table.num_rows == len(rows) == sum(sum(count_rows(j)[1:]) for j in ids)
    columns = list(RUN_COLUMNS)
    from_parquet = {tuple(r[c] for c in columns) for r in table.select(columns).to_pylist()}
    from_csv = {tuple(r[c] for c in columns) for r in rows}
    expected = set()
    for job_id in ids:
        spec = specs[job_id]
        for key, (run_id, optimizer, seed, hyper) in stored_runs(job_id).items():
            label = key.rsplit("/", 1)[0]
            hyper_json = json.dumps(hyper, sort_keys=True, separators=(",", ":"))
            assert json.loads(hyper_json) == hyper and " " not in hyper_json
            assert hyper["lr"] == next(
                o["lr"] for o in spec["optimizers"] if o.get("label", o["name"]) == label
            )
            expected.add(
                (
                    job_id,
                    spec["name"],
                    spec["dataset"]["name"],
                    spec["model"]["name"],
                    run_id,
                    label,
                    optimizer,
                    seed,
                    hyper_json,
                )
            )
    assert from_parquet == expected
    assert from_csv == {tuple(map(str, key)) for key in expected}
    for row in rows:  # the hyperparameters round-trip from the column
        assert (
            json.loads(row["hyperparameters"])
            == stored_runs(row["job_id"])[f"{row['label']}/{row['seed']}"][3]
        )

    # a join on job_id + label (+ seed): each epoch row meets exactly its own run's entry
    by_key = {(r["job_id"], r["label"], r["seed"]): r for r in runs}
    assert len(by_key) == len(runs) == sum(count_rows(j)[0] for j in ids)
    epochs = [r for r in rows if r["granularity"] == "epoch"]
    for row in epochs:
        entry = by_key[(row["job_id"], row["label"], int(row["seed"]))]
        assert str(entry["run_id"]) == row["run_id"]
        assert entry["hyperparameters"] == json.loads(row["hyperparameters"])
        index = entry["series"]["epoch"].index(int(row["epoch"]))
        assert float(row["val_loss"]) == entry["series"]["val_loss"][index]
    runs_table = pa.table(
        {
            "job_id": [r["job_id"] for r in runs],
            "label": [r["label"] for r in runs],
            "seed": pa.array([r["seed"] for r in runs], pa.int64()),
            "entry_run_id": pa.array([r["run_id"] for r in runs], pa.int64()),
        }
    )
    joined = table.filter(pa.compute.equal(table["granularity"], "epoch")).join(
        runs_table, keys=["job_id", "label", "seed"]
    )
    assert joined.num_rows == len(epochs)
    assert joined["run_id"].to_pylist() == joined["entry_run_id"].to_pylist()


def test_export_refuses_unknown_formats_and_jobs(jobs: Jobs) -> None:
    from services.errors import InvalidSpec, NotFound

    with pytest.raises(InvalidSpec, match="format: must be one of csv, json, parquet"):
        export_series(jobs.lecture, "xlsx", io.StringIO())
    with pytest.raises(InvalidSpec, match="granularity"):
        export_series(jobs.lecture, "csv", io.StringIO(), granularity="batch")
    with pytest.raises(InvalidSpec, match="binary"):
        export_series(jobs.lecture, "parquet", io.StringIO())
    with pytest.raises(NotFound):
        export_series(uuid.uuid4(), "csv", io.StringIO())

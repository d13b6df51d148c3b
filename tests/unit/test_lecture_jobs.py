"""The lecture's jobs through the API and the executor, in-process on the embedded default."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.spec import LECTURE_SPEC
from tests.support import local_client
from workers.execution import execute_job

LECTURE_NAMES = [entry["name"] for entry in LECTURE_SPEC["optimizers"]]


@pytest.fixture
def client(embedded_home: Path) -> Iterator[TestClient]:
    with local_client(create_app()) as client:
        yield client


def submit_and_run(client: TestClient, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    execute_job(job_id)  # what the worker's task does
    return client.get(f"/v1/jobs/{job_id}").json()


@pytest.mark.parametrize("dataset", [{"name": "digits"}, {"name": "mnist1d", "n_samples": 2000}])
def test_lecture_job_shares_the_start_steps_gd_per_epoch_and_survives_a_divergence(
    client: TestClient, dataset: dict[str, Any]
) -> None:
    spec = copy.deepcopy(LECTURE_SPEC)
    spec.update(dataset=dataset, epochs=3, seeds=[0, 1])
    spec["optimizers"].append({"name": "sgd", "lr": 1e6, "label": "sgd-1e6"})
    job = submit_and_run(client, spec)
    assert job["status"] == "succeeded", job["error"]

    series = client.get(f"/v1/jobs/{job['id']}/metrics").json()["runs"]
    for seed in (0, 1):
        runs = {run["label"]: run for run in series if run["seed"] == seed}
        first = {label: run["series"]["loss"][0] for label, run in runs.items() if label != "gd"}
        assert len(set(first.values())) == 1, first  # identical start, identical first batch
        assert runs["gd"]["series"]["step"] == [1, 2, 3]  # one full-batch step per epoch
        assert runs["gd"]["series"]["epoch"] == [1, 2, 3]
    other_seed = [run["series"]["loss"][0] for run in series if run["label"] == "sgd"]
    assert other_seed[0] != other_seed[1]  # seeds differ

    diverged = [run for run in job["runs"] if run["label"] == "sgd-1e6"]
    assert all(run["diverged"] and run["status"] == "succeeded" for run in diverged)
    summary = client.get(f"/v1/jobs/{job['id']}/summary").json()
    rows = {row["label"]: row for row in summary["optimizers"]}
    assert rows["sgd-1e6"]["diverged"] == 2 and rows["adam"]["diverged"] == 0


def test_rosenbrock_returns_eight_trajectories(client: TestClient) -> None:
    spec = {
        "name": "the lecture's picture",
        "dataset": {"name": "rosenbrock", "start": [-1.5, 2.0]},
        "model": {"name": "point"},
        "optimizers": [
            {"name": "gd", "lr": 1e-3},
            {"name": "sgd", "lr": 1e-3},
            {"name": "momentum", "lr": 1e-3, "momentum": 0.9},
            {"name": "nag", "lr": 1e-3, "momentum": 0.9},
            {"name": "adagrad", "lr": 0.5},
            {"name": "rmsprop", "lr": 0.01},
            {"name": "adadelta", "lr": 1.0},
            {"name": "adam", "lr": 0.05},
        ],
        "epochs": 200,
    }
    job = submit_and_run(client, spec)
    assert job["status"] == "succeeded", job["error"]
    runs = client.get(f"/v1/jobs/{job['id']}/metrics").json()["runs"]
    assert [run["label"] for run in runs] == LECTURE_NAMES
    for run in runs:
        xs, ys = run["series"]["x"], run["series"]["y"]
        assert len(xs) == len(ys) == 200 and (xs[0], ys[0]) == (-1.5, 2.0)
        assert xs[1:] != xs[:-1]  # it moved
    epochs = client.get(f"/v1/jobs/{job['id']}/metrics", params={"granularity": "epoch"}).json()
    adam = next(run for run in epochs["runs"] if run["label"] == "adam")["series"]["distance"]
    assert adam[-1] < adam[0]
    summary = client.get(f"/v1/jobs/{job['id']}/summary").json()
    assert summary["task"] == "landscape" and summary["target"]["metric"] == "distance"


def test_a_job_on_an_uploaded_data_set(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    upload = client.post("/v1/datasets", files={"file": ("xy.npz", buffer.getvalue())})
    assert upload.status_code == 201, upload.text
    spec = {
        "dataset": {"name": "upload", "id": upload.json()["id"]},
        "model": {"name": "linear"},
        "optimizers": [{"name": "adam", "lr": 0.05}],
        "epochs": 20,
        "batch_size": 32,
    }
    job = submit_and_run(client, spec)
    assert job["status"] == "succeeded", job["error"]
    summary = client.get(f"/v1/jobs/{job['id']}/summary").json()
    assert summary["optimizers"][0]["best_val_accuracy"] > 0.9

    missing = client.post(
        "/v1/jobs",
        json={**spec, "dataset": {"name": "upload", "id": "00000000-0000-0000-0000-000000000000"}},
    )
    assert missing.status_code == 422
    assert missing.json()["detail"].startswith("dataset.id: no uploaded data set")


@pytest.mark.parametrize(
    ("dataset", "model"),
    [("mnist", {"name": "cnn"}), ("cifar10", {"name": "resnet", "width": 4})],
)
def test_image_models_train_on_files_in_the_data_folder(
    embedded_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dataset: str,
    model: dict[str, Any],
) -> None:
    from tests.conftest import reset_process_state
    from tests.unit.test_datasets import write_cifar, write_idx_set

    if dataset == "mnist":
        write_idx_set(tmp_path / "data" / "mnist", (False,) * 4)
    else:
        write_cifar(tmp_path / "data")
    monkeypatch.setenv("OPTBENCH_DATA_DIR", str(tmp_path / "data"))
    reset_process_state()
    with local_client(create_app()) as client:
        job = submit_and_run(
            client,
            {
                "dataset": {"name": dataset, "val_fraction": 0.2, "test_fraction": 0.0},
                "model": model,
                "optimizers": [{"name": "sgd", "lr": 0.01}],
                "epochs": 2,
                "batch_size": 8,
            },
        )
    assert job["status"] == "succeeded", job["error"]
    assert job["runs"][0]["steps_done"] == job["runs"][0]["total_steps"] > 0


def test_a_regression_upload_is_summarised_as_regression(client: TestClient) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=300)).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    upload = client.post("/v1/datasets", files={"file": ("reg.npz", buffer.getvalue())})
    assert upload.json()["task"] == "regression"
    job = submit_and_run(
        client,
        {
            "dataset": {"name": "upload", "id": upload.json()["id"]},
            "model": {"name": "linear"},
            "optimizers": [{"name": "adam", "lr": 0.05}],
            "epochs": 20,
            "batch_size": 32,
            "target": {"metric": "val_r2", "value": 0.9},
        },
    )
    assert job["status"] == "succeeded", job["error"]
    summary = client.get(f"/v1/jobs/{job['id']}/summary").json()
    assert summary["task"] == "regression"
    assert summary["optimizers"][0]["best_val_accuracy"] > 0.9  # R²
    assert summary["optimizers"][0]["target_reached"] == "1/1"

"""Limits: each one refused with its status and a problem+json body that names the setting and
what to change; and the size estimates behind them, checked against the engine."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services import auth
from services.api.app import create_app
from services.settings import get_settings
from services.sizes import DataShape, data_shape, model_parameters, steps_per_run
from services.spec import JobSpec
from tests.support import local_client

PROBLEM = "application/problem+json"
SPEC: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [32]},
    "optimizers": [{"name": "sgd", "lr": 0.1}],
    "epochs": 2,
}


@pytest.fixture
def client_with(embedded_home: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """An in-process client from this machine, under the given OPTBENCH_* settings."""

    def make(**env: str) -> Any:
        for name, value in env.items():
            monkeypatch.setenv(f"OPTBENCH_{name.upper()}", value)
        get_settings.cache_clear()
        return local_client(create_app())

    return make


def assert_limit(response: Any, status: int, setting: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert setting in body["detail"]
    return body


def test_a_body_over_the_request_limit_is_a_413(client_with: Callable[..., Any]) -> None:
    with client_with(max_request_bytes="2048") as client:
        entries = [{"name": "sgd", "lr": 0.1, "label": f"sgd-{i}"} for i in range(64)]
        padded = {**SPEC, "optimizers": entries}
        body = assert_limit(client.post("/v1/jobs", json=padded), 413, "OPTBENCH_MAX_REQUEST_BYTES")
        assert "smaller job spec" in body["detail"] and body["limit_bytes"] == 2048

        def chunks() -> Any:  # no Content-Length: counted while it streams in
            yield b'{"name": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}'

        streamed = client.post("/v1/jobs", content=chunks(), headers={"content-type": "json"})
        assert_limit(streamed, 413, "OPTBENCH_MAX_REQUEST_BYTES")
        assert client.post("/v1/jobs", json=SPEC).status_code == 202  # under it: accepted
        assert client.get("/v1/jobs").json()["total"] == 1
        metrics = client.get("/metrics").text
        assert 'optbench_jobs_rejected_total{reason="too_large"} 2.0' in metrics


def rejected_for_limits(client: Any) -> float:
    """The API's count of jobs refused for a limit, read from its /metrics."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('optbench_jobs_rejected_total{reason="limit"}'):
            return float(line.split()[-1])
    return 0.0


def test_too_many_runs_is_a_422_naming_seeds_and_the_setting(
    client_with: Callable[..., Any],
) -> None:
    with client_with(max_runs_per_job="6") as client:
        before = rejected_for_limits(client)
        spec = {**SPEC, "optimizers": [{"name": "sgd"}, {"name": "adam"}], "seeds": [0, 1, 2, 3]}
        body = assert_limit(client.post("/v1/jobs", json=spec), 422, "OPTBENCH_MAX_RUNS_PER_JOB")
        assert body["type"].endswith("/limit-exceeded")
        assert body["errors"][0]["field"] == "seeds"
        assert "= 8 runs" in body["detail"] and "fewer seeds" in body["detail"]
        assert body["limit"] == {
            "setting": "OPTBENCH_MAX_RUNS_PER_JOB",
            "maximum": 6,
            "requested": 8,
        }
        assert client.post("/v1/jobs", json={**spec, "seeds": [0, 1, 2]}).status_code == 202
        # one more rejection counted (other tests of this process count theirs too)
        assert rejected_for_limits(client) == before + 1


def test_too_many_steps_is_a_422_naming_epochs(client_with: Callable[..., Any]) -> None:
    # digits: 1,797 samples, 60 % for training = 1,077; batch 64 -> 17 steps per epoch
    with client_with(max_steps_per_run="1000") as client:
        spec = {**SPEC, "epochs": 100}
        body = assert_limit(client.post("/v1/jobs", json=spec), 422, "OPTBENCH_MAX_STEPS_PER_RUN")
        assert body["errors"][0]["field"] == "epochs"
        assert "100 epochs x 17 steps per epoch" in body["detail"]
        assert "fewer epochs, a larger batch_size" in body["detail"]
        assert body["limit"]["requested"] == 1700
        assert client.post("/v1/jobs", json={**spec, "batch_size": 128}).status_code == 202
        # full batch: one step per epoch
        gd = {**spec, "optimizers": [{"name": "gd"}]}
        assert client.post("/v1/jobs", json=gd).status_code == 202


def test_too_many_parameters_is_a_422_naming_the_model(client_with: Callable[..., Any]) -> None:
    with client_with(max_model_parameters="100000") as client:
        spec = {**SPEC, "model": {"name": "mlp", "hidden": [512, 512]}}
        body = assert_limit(
            client.post("/v1/jobs", json=spec), 422, "OPTBENCH_MAX_MODEL_PARAMETERS"
        )
        assert body["errors"][0]["field"] == "model"
        assert body["limit"]["requested"] == 65 * 512 + 513 * 512 + 513 * 10
        assert "fewer or narrower layers" in body["detail"]
        assert client.post("/v1/jobs", json=SPEC).status_code == 202


def test_an_upload_over_its_limit_is_a_413(client_with: Callable[..., Any]) -> None:
    with client_with(max_upload_bytes="1000") as client:
        response = client.post("/v1/datasets", files={"file": ("d.csv", b"0" * 5000)})
        body = assert_limit(response, 413, "OPTBENCH_MAX_UPLOAD_BYTES")
        assert "upload fewer samples or features" in body["detail"]


def test_jobs_in_flight_per_owner_is_a_429_with_retry_after(
    client_with: Callable[..., Any],
) -> None:
    with client_with(max_jobs_in_flight="2") as client:
        for _ in range(2):
            assert client.post("/v1/jobs", json=SPEC).status_code == 202
        refused = client.post("/v1/jobs", json=SPEC)
        body = assert_limit(refused, 429, "OPTBENCH_MAX_JOBS_IN_FLIGHT")
        assert refused.headers["retry-after"] == "30"
        assert body["retry_after_seconds"] == 30
        assert "owner 'local'" in body["detail"] and "wait until one has finished" in body["detail"]
        assert client.get("/v1/jobs").json()["total"] == 2
        # another owner has its own allowance
        key = auth.create_key("alice").token
        other = client.post("/v1/jobs", json=SPEC, headers={"Authorization": f"Bearer {key}"})
        assert other.status_code == 202
        assert 'optbench_jobs_rejected_total{reason="in_flight"} 1.0' in client.get("/metrics").text


def test_the_limits_have_sane_defaults(embedded_home: Path) -> None:
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.auth == "loopback"
    assert settings.max_request_bytes == 1024 * 1024
    assert settings.max_runs_per_job == 256
    assert settings.max_steps_per_run == 10_000_000
    assert settings.max_model_parameters == 10_000_000
    assert settings.max_jobs_in_flight == 8
    assert settings.cors_origin_list == [] and settings.allowed_host_list == ["*"]
    from services.spec import LECTURE_SPEC

    with local_client(create_app()) as client:  # the lecture job passes every default
        assert client.post("/v1/jobs", json=LECTURE_SPEC).status_code == 202


# --- estimates against the engine ----------------------------------------------------------

ENGINE_DATASETS = [
    {"name": "digits"},
    {"name": "iris", "val_fraction": 0.3, "test_fraction": 0.0},
    {"name": "wine"},
    {"name": "breast_cancer"},
    {"name": "moons", "n_samples": 333},
    {"name": "blobs", "n_samples": 500, "n_features": 7, "centers": 5},
    {"name": "spirals", "n_samples": 400, "n_classes": 3},
    {"name": "classification", "n_samples": 1000, "n_features": 12, "n_classes": 6},
    {"name": "regression", "n_samples": 700, "n_features": 9},
    {"name": "mnist1d", "n_samples": 200},
]


@pytest.mark.parametrize("dataset", ENGINE_DATASETS, ids=lambda d: d["name"])
def test_data_shapes_match_the_engine(dataset: dict[str, Any]) -> None:
    from workers.engine.config import DatasetConfig
    from workers.engine.datasets import load

    spec = JobSpec.model_validate({**SPEC, "dataset": dataset, "batch_size": 16})
    split = {k: dataset[k] for k in ("val_fraction", "test_fraction") if k in dataset}
    params = {k: v for k, v in dataset.items() if k not in ("name", *split)}
    data = load(DatasetConfig(dataset["name"], params=params, **split))
    shape = data_shape(spec)
    assert shape is not None
    assert shape.input_shape == data.input_shape
    assert shape.n_outputs == data.n_outputs
    n_train = int(data.y_train.shape[0])
    # unstratified shares: never fewer training samples than the engine's stratified split,
    # at most one more per class and split
    assert n_train <= shape.n_train <= n_train + 2 * data.n_outputs
    engine = spec.epochs * math.ceil(n_train / 16)
    assert engine <= steps_per_run(spec, shape) <= engine + spec.epochs * (data.n_outputs // 8 + 1)


def test_an_upload_s_shape_comes_from_its_row() -> None:
    from services.db.models import Dataset

    spec = JobSpec.model_validate(
        {**SPEC, "dataset": {"name": "upload", "id": "00000000-0000-0000-0000-000000000001"}}
    )
    row = Dataset(n_samples=100, n_features=5, n_classes=None, task="regression")
    assert data_shape(spec, row) == DataShape(100, 60, (5,), 1)
    landscape = JobSpec.model_validate(
        {**SPEC, "dataset": {"name": "rosenbrock"}, "model": {"name": "point"}, "epochs": 50}
    )
    assert data_shape(landscape) is None
    assert steps_per_run(landscape, None) == 50 and model_parameters(landscape, None) == 2


MODELS = [
    ({"name": "linear"}, (64,), 10),
    ({"name": "mlp", "hidden": [128]}, (64,), 10),
    ({"name": "mlp", "hidden": [30, 20, 10], "norm": "batch"}, (13,), 3),
    ({"name": "mlp", "hidden": [16, 8], "norm": "layer", "dropout": 0.1}, (9,), 1),
    ({"name": "cnn"}, (1, 28, 28), 10),
    ({"name": "cnn"}, (3, 32, 32), 10),
    ({"name": "resnet"}, (3, 32, 32), 10),
    ({"name": "resnet", "width": 8, "blocks": 3}, (1, 28, 28), 10),
    ({"name": "resnet", "width": 32, "blocks": 2}, (3, 32, 32), 10),
]


@pytest.mark.parametrize(("model", "input_shape", "outputs"), MODELS)
def test_parameter_counts_match_torch(
    model: dict[str, Any], input_shape: tuple[int, ...], outputs: int
) -> None:
    from workers.engine.config import ModelConfig
    from workers.engine.models import build

    image = len(input_shape) == 3
    dataset = {"name": "cifar10" if image else "digits"}
    spec = JobSpec.model_validate({**SPEC, "dataset": dataset, "model": model})
    shape = DataShape(100, 60, input_shape, outputs)
    params = {k: v for k, v in model.items() if k != "name"}
    module = build(ModelConfig(model["name"], params), input_shape, outputs)
    assert model_parameters(spec, shape) == sum(p.numel() for p in module.parameters())


def test_the_api_never_imports_torch_for_the_limits() -> None:
    import subprocess
    import sys

    code = "import sys, services.limits, services.sizes; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((20, 3)), y=np.arange(20) % 2)
    return buffer.getvalue()


def test_an_upload_s_size_is_used_for_the_limits(client_with: Callable[..., Any]) -> None:
    with client_with(max_model_parameters="5") as client:
        upload = client.post("/v1/datasets", files={"file": ("d.npz", _npz())})
        spec = {**SPEC, "dataset": {"name": "upload", "id": upload.json()["id"]}}
        spec["model"] = {"name": "linear"}
        body = assert_limit(
            client.post("/v1/jobs", json=spec), 422, "OPTBENCH_MAX_MODEL_PARAMETERS"
        )
        assert body["limit"]["requested"] == (3 + 1) * 2

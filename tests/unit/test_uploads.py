"""User uploads: POST /v1/datasets with NPZ or CSV, on the embedded default, in-process."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.db.session import unit_of_work
from services.uploads import load_dataset_bytes
from tests.conftest import reset_process_state
from tests.support import local_client
from tests.unit.test_layers import run_python

PROBLEM = "application/problem+json"


@pytest.fixture
def client(embedded_home: Path) -> Iterator[TestClient]:
    with local_client(create_app()) as client:
        yield client


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def stored(dataset_id: str) -> dict[str, np.ndarray]:
    with unit_of_work() as session:
        data = load_dataset_bytes(session, dataset_id)
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_npz_upload_round_trips(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2, 3))  # flattened to 30 x 6
    y = np.repeat(np.arange(3), 10)
    response = client.post(
        "/v1/datasets", files={"file": ("blobs.npz", npz_bytes(x=x, y=y))}, data={"name": "blobs"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/datasets/{body['id']}"
    assert body["name"] == "blobs"
    assert body["task"] == "classification"
    assert (body["n_samples"], body["n_features"], body["n_classes"]) == (30, 6, 3)
    assert body["size_bytes"] == len(npz_bytes(x=x, y=y))
    assert body["created_at"]

    arrays = stored(body["id"])
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (30, 6)
    np.testing.assert_array_equal(arrays["x"], x.reshape(30, 6).astype(np.float32))
    assert arrays["y"].dtype == np.int64
    np.testing.assert_array_equal(arrays["classes"][arrays["y"]], y)
    assert str(arrays["task"]) == "classification"

    assert client.get(f"/v1/datasets/{body['id']}").json() == body
    listing = client.get("/v1/datasets").json()
    assert listing["total"] == 1 and listing["items"] == [body]


def test_csv_with_string_labels_is_classification(client: TestClient) -> None:
    species = ["setosa", "versicolor", "virginica"]
    rows = [[i * 0.1, i % 4, species[i % 3]] for i in range(12)]
    content = csv_bytes(["petal", "sepal", "species"], rows)
    response = client.post(
        "/v1/datasets",
        files={"file": ("iris.csv", content)},
        data={"label_column": "species"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "iris.csv"  # defaults to the file name
    assert body["task"] == "classification"
    assert (body["n_samples"], body["n_features"], body["n_classes"]) == (12, 2, 3)
    arrays = stored(body["id"])
    assert list(arrays["classes"]) == species
    assert [species[i % 3] for i in range(12)] == list(arrays["classes"][arrays["y"]])
    np.testing.assert_allclose(arrays["x"][:, 0], [i * 0.1 for i in range(12)], rtol=1e-6)


def test_csv_with_a_float_target_is_regression(client: TestClient) -> None:
    rows = [[i, i * 2, 0.5 * i + 0.25] for i in range(20)]
    response = client.post(
        "/v1/datasets",
        files={"file": ("prices.csv", csv_bytes(["a", "b", "price"], rows))},
        data={"label_column": "price"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["task"] == "regression" and body["n_classes"] is None
    arrays = stored(body["id"])
    assert arrays["y"].dtype == np.float32 and "classes" not in arrays
    np.testing.assert_allclose(arrays["y"], [0.5 * i + 0.25 for i in range(20)])


def test_task_can_be_forced(client: TestClient) -> None:
    rows = [[i, i % 2] for i in range(12)]  # integer labels: classification unless told
    response = client.post(
        "/v1/datasets",
        files={"file": ("d.csv", csv_bytes(["f", "label"], rows))},
        data={"label_column": "label", "task": "regression"},
    )
    assert response.status_code == 201 and response.json()["task"] == "regression"
    bad = client.post(
        "/v1/datasets",
        files={"file": ("d.csv", csv_bytes(["f", "label"], rows))},
        data={"label_column": "label", "task": "ranking"},
    )
    assert "task" in assert_problem(bad, 422)["detail"]


def test_missing_label_column_lists_the_columns(client: TestClient) -> None:
    content = csv_bytes(["alpha", "beta", "target"], [[1, 2, 0]] * 12)
    response = client.post(
        "/v1/datasets", files={"file": ("d.csv", content)}, data={"label_column": "label"}
    )
    detail = assert_problem(response, 422)["detail"]
    assert "'label'" in detail
    assert all(f"'{c}'" in detail for c in ("alpha", "beta", "target"))
    unnamed = client.post("/v1/datasets", files={"file": ("d.csv", content)})
    detail = assert_problem(unnamed, 422)["detail"]
    assert "label_column" in detail and "'target'" in detail


def test_non_numeric_feature_names_the_column_and_line(client: TestClient) -> None:
    rows: list[list[object]] = [[i, i, i % 2] for i in range(12)]
    rows[4][1] = "high"
    response = client.post(
        "/v1/datasets",
        files={"file": ("d.csv", csv_bytes(["f1", "f2", "label"], rows))},
        data={"label_column": "label"},
    )
    detail = assert_problem(response, 422)["detail"]
    assert "'f2'" in detail and "line 6" in detail and "'high'" in detail


@pytest.mark.parametrize("filename", ["data.json", "data", "train.csv.gz"])
def test_wrong_suffix_is_a_422_naming_the_formats(client: TestClient, filename: str) -> None:
    response = client.post("/v1/datasets", files={"file": (filename, b"{}")})
    detail = assert_problem(response, 422)["detail"]
    assert ".npz" in detail and ".csv" in detail


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((5, 2)), "y": np.arange(5)}, "at least 10 samples"),
        ({"x": np.zeros((12, 2)), "y": np.zeros(12)}, "at least 2 classes"),
        ({"x": np.zeros((12, 2)), "y": np.array([0] * 11 + [1])}, "at least 2 samples"),
        ({"x": np.full((12, 2), np.nan), "y": np.arange(12) % 2}, "x[0, 0]"),
        ({"x": np.zeros((12, 2)), "y": np.arange(11)}, "one entry per sample"),
        ({"features": np.zeros((12, 2))}, "missing 'x', 'y'"),
    ],
)
def test_npz_sanity_checks(client: TestClient, arrays: dict[str, np.ndarray], message: str) -> None:
    response = client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**arrays))})
    assert message in assert_problem(response, 422)["detail"]


def test_too_large_is_a_413_and_nothing_is_stored(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTBENCH_MAX_UPLOAD_BYTES", "1000")
    reset_process_state()  # also clears get_settings' cache
    rows = [[i, i * 2, i % 2] for i in range(200)]
    content = csv_bytes(["a", "b", "label"], rows)
    assert len(content) > 1000
    response = client.post(
        "/v1/datasets", files={"file": ("d.csv", content)}, data={"label_column": "label"}
    )
    body = assert_problem(response, 413)
    assert "1000 bytes" in body["detail"] and body["limit_bytes"] == 1000

    # far over the limit: refused from the Content-Length header, before the form is read
    huge = client.post("/v1/datasets", files={"file": ("d.csv", b"0" * 200_000)})
    length = huge.request.headers["content-length"]
    assert f"the upload is {length} bytes" in assert_problem(huge, 413)["detail"]

    # no Content-Length (chunked): refused while the body streams in
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.csv"\r\n\r\n'
        for _ in range(100):
            yield b"0" * 1000
        yield b"\r\n--b--\r\n"

    streamed = client.post(
        "/v1/datasets",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert_problem(streamed, 413)
    assert client.get("/v1/datasets").json()["total"] == 0


def test_unknown_dataset_is_a_404_problem(client: TestClient) -> None:
    response = client.get(f"/v1/datasets/{uuid.uuid4()}")
    assert assert_problem(response, 404)["detail"].startswith("no dataset with id")


def test_uploading_does_not_import_torch(tmp_path: Path) -> None:
    env = {**os.environ, "OPTBENCH_HOME": str(tmp_path)}
    env.pop("OPTBENCH_DATABASE_URL", None)
    env.pop("OPTBENCH_BROKER_URL", None)
    out = run_python(
        """
        import io, sys
        import numpy as np
        from fastapi.testclient import TestClient
        from services.db.migrate import upgrade
        from services.api.app import create_app
        upgrade()
        client = TestClient(
            create_app(), base_url="http://127.0.0.1", client=("127.0.0.1", 50000)
        )
        buffer = io.BytesIO()
        np.savez(buffer, x=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 2)
        npz = client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())})
        assert npz.status_code == 201, npz.text
        csv = "f,label\\n" + "".join(f"{i},{'ab'[i % 2]}\\n" for i in range(12))
        sent = client.post(
            "/v1/datasets", files={"file": ("d.csv", csv.encode())}, data={"label_column": "label"}
        )
        assert sent.status_code == 201, sent.text
        assert client.get("/v1/datasets").json()["total"] == 2
        print("torch" in sys.modules, "workers" in sys.modules)
    """,
        env=env,
    )
    assert out == "False False"

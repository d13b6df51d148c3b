"""User uploads: POST /v1/datasets with NPZ or CSV, on the embedded default, in-process."""

from __future__ import annotations

import io
import os
import time
import tracemalloc
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.db.session import unit_of_work
from services.errors import InvalidSpec
from services.uploads import load_dataset_bytes, store_upload
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
        ({"features": np.zeros((12, 2))}, "it holds 'features.npy'"),
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


# --- hardening (issue 16): linear time, bounded memory, only x.npy and y.npy ---------------


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """An archive holding exactly these members (compressed), as np.savez would write them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def small_xy() -> dict[str, bytes]:
    x = np.random.default_rng(0).normal(size=(20, 2))
    return {"x.npy": npy_bytes(x), "y.npy": npy_bytes(np.arange(20) % 2)}


def test_a_wide_header_with_a_repeated_name_is_refused_in_linear_time(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40,000 distinct names and one repeat: the old check (header.count per name) took 21 s.
    monkeypatch.setenv("OPTBENCH_MAX_UPLOAD_COLUMNS", "100000")
    reset_process_state()
    header = [f"feature_{i}" for i in range(40_000)] + ["feature_7", "label"]
    content = (",".join(header) + "\n").encode()
    started = time.perf_counter()
    response = client.post(
        "/v1/datasets", files={"file": ("wide.csv", content)}, data={"label_column": "label"}
    )
    elapsed = time.perf_counter() - started
    detail = assert_problem(response, 422)["detail"]
    assert "repeated: 'feature_7'" in detail
    assert elapsed < 3.0, f"{elapsed:.1f} s to refuse a 40,000-column header"


def test_a_million_column_header_is_refused_by_the_column_cap_within_a_second(
    client: TestClient,
) -> None:
    header = [f"c{i}" for i in range(1_000_000)]  # about 6.9 MB, far under the upload limit
    content = (",".join(header) + "\n" + ",".join("0" * len(header)) + "\n").encode()
    started = time.perf_counter()
    with pytest.raises(InvalidSpec) as refused:
        store_upload("wide", "wide.csv", content, label_column="c0")
    elapsed = time.perf_counter() - started
    assert "1000000 columns" in str(refused.value)
    assert "OPTBENCH_MAX_UPLOAD_COLUMNS" in str(refused.value)
    assert elapsed < 1.0, f"{elapsed:.2f} s to refuse a 1,000,000-column header"
    # and through the API, as a problem naming the setting
    response = client.post(
        "/v1/datasets", files={"file": ("wide.csv", content)}, data={"label_column": "c0"}
    )
    assert "OPTBENCH_MAX_UPLOAD_COLUMNS" in assert_problem(response, 422)["detail"]


def test_the_column_cap_is_a_setting(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTBENCH_MAX_UPLOAD_COLUMNS", "3")
    reset_process_state()
    rows = [[i, i, i, i % 2] for i in range(12)]
    wide = client.post(
        "/v1/datasets",
        files={"file": ("d.csv", csv_bytes(["a", "b", "c", "label"], rows))},
        data={"label_column": "label"},
    )
    detail = assert_problem(wide, 422)["detail"]
    assert "4 columns" in detail and "at most 3" in detail
    narrow = client.post(
        "/v1/datasets",
        files={"file": ("d.csv", csv_bytes(["a", "b", "label"], [r[1:] for r in rows]))},
        data={"label_column": "label"},
    )
    assert narrow.status_code == 201, narrow.text


def test_an_npz_member_beside_x_npy_cannot_bypass_the_unpacked_limit(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Honest tiny x.npy and y.npy, plus a member named plain "x" (what numpy's archive["x"]
    # also loads) that unpacks to 2 MB: over the unpacked limit of 8 x 100,000 bytes.
    monkeypatch.setenv("OPTBENCH_MAX_UPLOAD_BYTES", "100000")
    reset_process_state()
    content = zip_bytes({**small_xy(), "x": npy_bytes(np.zeros((25_000, 10)))})
    assert len(content) < 100_000
    response = client.post("/v1/datasets", files={"file": ("sneaky.npz", content)})
    detail = assert_problem(response, 422)["detail"]
    assert "exactly 'x.npy' and 'y.npy'" in detail
    assert "'x', 'x.npy', 'y.npy'" in detail
    assert client.get("/v1/datasets").json()["total"] == 0


@pytest.mark.parametrize(
    ("members", "found"),
    [
        ({"x": b"not an array", "y": b"nor this"}, "'x', 'y'"),
        ({"x.npy": b"", "y.npy": b"", "z.npy": b""}, "'x.npy', 'y.npy', 'z.npy'"),
        ({"y.npy": b""}, "'y.npy'"),
        ({}, "nothing"),
    ],
)
def test_an_npz_must_hold_exactly_x_npy_and_y_npy(
    client: TestClient, members: dict[str, bytes], found: str
) -> None:
    response = client.post("/v1/datasets", files={"file": ("d.npz", zip_bytes(members))})
    detail = assert_problem(response, 422)["detail"]
    assert "exactly 'x.npy' and 'y.npy'" in detail and f"it holds {found}" in detail


def test_a_member_x_of_raw_bytes_is_a_422_not_a_500(client: TestClient) -> None:
    # np.load's archive["x"] returns the raw bytes of a member that is not a .npy array
    for members in (
        {**small_xy(), "x": b"raw bytes, not .npy"},
        {"x.npy": b"raw bytes, not .npy", "y.npy": small_xy()["y.npy"]},
    ):
        response = client.post("/v1/datasets", files={"file": ("d.npz", zip_bytes(members))})
        assert_problem(response, 422)
    raw = client.post(
        "/v1/datasets",
        files={"file": ("d.npz", zip_bytes({**small_xy(), "x.npy": b"raw bytes"}))},
    )
    assert "x.npy: not a .npy array" in assert_problem(raw, 422)["detail"]


def test_a_declared_shape_over_the_limit_is_refused_before_anything_is_allocated(
    client: TestClient,
) -> None:
    # A .npy header declaring 20 x 10^12 float64 values over a few bytes of data: refused from
    # the header (the old code tried to allocate them, 160 TB).
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (20, 10**12)}
    )
    content = zip_bytes({"x.npy": header.getvalue() + b"\0" * 80, "y.npy": small_xy()["y.npy"]})
    response = client.post("/v1/datasets", files={"file": ("d.npz", content)})
    body = assert_problem(response, 413)
    assert "x.npy declares 160000000000000 bytes" in body["detail"]


def test_npz_arrays_of_the_wrong_kind_are_refused_from_their_headers(client: TestClient) -> None:
    x = np.random.default_rng(0).normal(size=(20, 2))
    objects = np.array([object()] * 20, dtype=object)
    cases = [
        ({"x.npy": npy_bytes(objects), "y.npy": small_xy()["y.npy"]}, "object arrays"),
        ({"x.npy": npy_bytes(x.astype(complex)), "y.npy": small_xy()["y.npy"]}, "x: must be"),
        ({"x.npy": npy_bytes(x[:, 0]), "y.npy": small_xy()["y.npy"]}, "x: must be N x D"),
        ({"x.npy": npy_bytes(x), "y.npy": npy_bytes(np.zeros((20, 2)))}, "y: must be 1-D"),
        ({"x.npy": npy_bytes(x), "y.npy": npy_bytes(np.arange(19))}, "one entry per sample"),
        ({"x.npy": npy_bytes(x), "y.npy": npy_bytes(np.arange(20) + 0j)}, "y: must hold"),
    ]
    for members, message in cases:
        response = client.post("/v1/datasets", files={"file": ("d.npz", zip_bytes(members))})
        assert message in assert_problem(response, 422)["detail"], message


def test_npz_layouts_numpy_writes_are_read_as_before(client: TestClient) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2, 3))
    y = np.array([b"cat", b"dog", b"eel"] * 10)  # byte strings: decoded as UTF-8
    for arrays, compressed in (
        ({"x": np.asfortranarray(x), "y": y}, True),
        ({"x": x, "y": y}, False),
    ):
        buffer = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buffer, **arrays)  # type: ignore[operator]
        response = client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())})
        assert response.status_code == 201, response.text
        stored_arrays = stored(response.json()["id"])
        np.testing.assert_array_equal(stored_arrays["x"], x.reshape(30, 6).astype(np.float32))
        assert list(stored_arrays["classes"]) == ["cat", "dog", "eel"]
    overflow = client.post(
        "/v1/datasets",
        files={"file": ("d.npz", npz_bytes(x=np.full((12, 2), 1e39), y=np.arange(12) % 2))},
    )
    assert "x[0, 0] is 1e+39" in assert_problem(overflow, 422)["detail"]


def test_csv_parse_errors_are_422s_that_name_the_line(client: TestClient) -> None:
    header = "a,b,label\n"
    lines = [f"{i},{i * 2},{i % 2}\n" for i in range(12)]
    good = "".join(lines)
    rows = lines  # blank lines between rows 5 and 6 (lines 7 and 8) are skipped, yet counted
    cases = [
        (header + good + "1,2\n", "line 14 has 2 field(s); the header has 3"),
        (
            header + "".join(rows[:5]) + "\n\n" + "".join(rows[5:]) + "1,2,3,4\n",
            "line 16 has 4 field(s)",
        ),
        (header + good + "1,,1\n", "column 'b': must be numeric"),
        (header + good + "1,NaN,1\n", "column 'b' on line 14 is NaN"),
        (header + good + "1,1e39,1\n", "column 'b' on line 14 is 1e39"),
        (header + good + "1,2, \n", "empty on line 14"),
        ("a,b,label\n" + good.replace("5,10,1", "5,\xff,1"), "line 7"),
    ]
    for text, message in cases:
        response = client.post(
            "/v1/datasets",
            files={"file": ("d.csv", text.encode("latin-1"))},
            data={"label_column": "label"},
        )
        assert message in assert_problem(response, 422)["detail"], (text[-20:], message)
    quoted = header + good + '3,4,"a, quoted\nlabel"\n3,4,"a, quoted\nlabel"\n'
    response = client.post(
        "/v1/datasets",
        files={"file": ("d.csv", ("\ufeff" + quoted).encode())},
        data={"label_column": "label"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["n_samples"] == 14


def test_an_npz_upload_peaks_under_three_times_its_unpacked_size(embedded_home: Path) -> None:
    # float64 features unpacked: 8 MB; the stored float32 copy and the stored NPZ are what
    # the upload needs beside them. tracemalloc sees numpy's allocations.
    x = np.random.default_rng(0).normal(size=(100_000, 10))
    y = np.arange(100_000) % 3
    content = npz_bytes(x=x, y=y)
    unpacked = x.nbytes + y.nbytes
    del x, y
    tracemalloc.start()
    try:
        store_upload("big", "big.npz", content)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * unpacked, f"peak {peak / 1e6:.1f} MB for {unpacked / 1e6:.1f} MB unpacked"


def test_a_csv_upload_peaks_under_three_times_its_size(embedded_home: Path) -> None:
    # The old parser held the text, a list per row and a Python float per value: 5x the CSV.
    # Python's and numpy's allocations (tracemalloc) plus pyarrow's pool (its own allocator).
    pyarrow = pytest.importorskip("pyarrow")
    x = np.random.default_rng(0).normal(size=(100_000, 10))
    header = ",".join(f"f{i}" for i in range(10)) + ",label\n"
    body = "".join(",".join(f"{v:.6g}" for v in row) + f",{i % 3}\n" for i, row in enumerate(x))
    content = (header + body).encode()
    del x, body
    pool = pyarrow.default_memory_pool()
    tracemalloc.start()
    try:
        store_upload("big", "big.csv", content, label_column="label")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak += pool.max_memory()  # the pool's high-water mark since the process started: a bound
    assert peak < 3 * len(content), (
        f"peak {peak / 1e6:.1f} MB for a {len(content) / 1e6:.1f} MB CSV"
    )


# The route's path, in a fresh child process (its peak RSS is the API's): the upload spooled
# as Starlette spools it (in memory up to 1 MiB, then on disk), then the route's handler.
ROUTE_PEAK = r"""
import json, os, sys, tempfile
from fastapi import Response
from starlette.datastructures import UploadFile
from sqlalchemy import text
from services.api.routes.datasets import upload_dataset
from services.db.session import unit_of_work

with unit_of_work() as session:  # a warm API: its driver loaded, a connection in the pool
    session.execute(text("SELECT 1"))

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

path = sys.argv[1]
spooled = tempfile.SpooledTemporaryFile(max_size=1 << 20)
before = rss("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # peak RSS := current RSS
with open(path, "rb") as source:
    while chunk := source.read(1 << 16):  # as the form parser writes it, a chunk at a time
        spooled.write(chunk)
spooled.seek(0)
out = upload_dataset(UploadFile(spooled, filename=os.path.basename(path)), Response(), "local")
print(json.dumps({"peak": rss("VmHWM:") - before, "samples": out.n_samples}))
"""


def route_peak(path: Path, env: dict[str, str]) -> dict[str, int]:
    import json

    env = {**os.environ, "OPTBENCH_MAX_UPLOAD_BYTES": str(64 << 20), **env}
    result: dict[str, int] = json.loads(
        run_python(ROUTE_PEAK.replace("sys.argv[1]", repr(str(path))), env)
    )
    return result


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_an_npz_upload_through_the_route_peaks_under_three_times_its_unpacked_size(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Once 4.6x at the limit: the route's bytes of the upload, the stored NPZ and the
    # database driver's copy of it, all at the insert. Measured as RSS (sqlite's and
    # psycopg's copies are not Python allocations), in a child process.
    if backend == "sqlite":
        env = {"OPTBENCH_HOME": str(tmp_path / "home"), "OPTBENCH_DATABASE_URL": ""}
        run_python("from services.db.migrate import upgrade; upgrade()", {**os.environ, **env})
    else:
        env = {"OPTBENCH_DATABASE_URL": request.getfixturevalue("postgres_url")}
    x = np.random.default_rng(0).normal(size=(120_000, 32)).astype(np.float32)  # 15 MB
    y = (x[:, 0] > 0).astype(np.int64)
    unpacked = x.nbytes + y.nbytes
    path = tmp_path / "limit.npz"
    np.savez(path, x=x, y=y)
    del x, y
    result = route_peak(path, env)
    assert result["samples"] == 120_000
    assert result["peak"] < 3 * unpacked, (
        f"peak {result['peak'] / 1e6:.1f} MB for {unpacked / 1e6:.1f} MB unpacked "
        f"({result['peak'] / unpacked:.2f}x)"
    )


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_large_upload_is_stored_exactly_as_numpy_reads_it(client: TestClient, order: str) -> None:
    # Over 1 MiB: written into the stored NPZ a slice at a time, and on SQLite into the row
    # a slice at a time (blob I/O); what a worker loads must be the upload, to the bit.
    x = np.asarray(np.random.default_rng(1).normal(size=(20_000, 24)), np.float32, order=order)
    y = np.array(["cat", "dog", "emu"])[np.arange(20_000) % 3]
    response = client.post("/v1/datasets", files={"file": ("big.npz", npz_bytes(x=x, y=y))})
    assert response.status_code == 201, response.text
    arrays = stored(response.json()["id"])
    np.testing.assert_array_equal(arrays["x"], x)
    assert arrays["classes"].tolist() == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(arrays["classes"][arrays["y"]], y)
    assert response.json()["size_bytes"] == len(npz_bytes(x=x, y=y))


def test_a_byte_that_is_not_utf8_past_the_first_mebibyte_is_named_with_its_line(
    client: TestClient,
) -> None:
    # The check reads the spooled file a mebibyte at a time: the line counts carry over.
    rows = "".join(f"{i % 7}.25,{i % 2}\n" for i in range(200_000))  # about 1.4 MB
    content = ("f,label\n" + rows).encode() + b"1.5,\xff\n"
    response = client.post(
        "/v1/datasets", files={"file": ("d.csv", content)}, data={"label_column": "label"}
    )
    body = assert_problem(response, 422)
    assert f"byte {len(content) - 2} (line 200002)" in body["detail"], body["detail"]

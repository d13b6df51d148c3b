"""Data sets: the spec and the engine agree, every loader splits stratified and seeded, file
data sets read their formats (tiny files written here) and say what is missing."""

from __future__ import annotations

import ast
import gzip
import inspect
import io
import pickle
import random
import struct
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from services.spec import JobSpec, field_errors
from services.spec.data import SAMPLE_MODELS, dataset_task
from workers.engine import datasets
from workers.engine.config import DatasetConfig
from workers.engine.datasets import DATASETS, Splits, load
from workers.engine.splits import standardise, stratified_subset

SPLIT_FIELDS = {"name", "val_fraction", "test_fraction", "seed"}
ADAPTER_SUPPLIED = {"folder", "npz", "cache"}  # the adapter adds these; the spec never has them
SPEC_ONLY = {"id"}  # the adapter turns an upload's id into its npz


def params_of(name: str, **given: Any) -> dict[str, Any]:
    """The loader's parameters as the adapter builds them: the validated spec's own fields."""
    spec = SAMPLE_MODELS[name].model_validate({"name": name, **given})
    return spec.model_dump(exclude=SPLIT_FIELDS)


def load_named(name: str, seed: int = 0, **given: Any) -> Splits:
    return load(DatasetConfig(name, params_of(name, **given), 0.2, 0.2, seed))


# --- the spec and the registry agree ------------------------------------------------------


def test_every_spec_has_a_loader_and_every_loader_a_spec() -> None:
    assert set(SAMPLE_MODELS) == set(DATASETS.names())


@pytest.mark.parametrize("name", sorted(SAMPLE_MODELS))
def test_loader_parameters_and_defaults_are_the_specs(name: str) -> None:
    signature = inspect.signature(DATASETS.get(name)).parameters
    loader = {key: p.default for key, p in signature.items() if key not in {"seed"}}
    fields = SAMPLE_MODELS[name].model_fields
    spec = {key: f.default for key, f in fields.items() if key not in SPLIT_FIELDS}
    assert set(loader) - ADAPTER_SUPPLIED == set(spec) - SPEC_ONLY
    for key in set(spec) - SPEC_ONLY:
        assert loader[key] == spec[key], key


def test_the_engine_module_imports_only_torch_numpy_and_the_standard_library() -> None:
    tree = ast.parse(Path(datasets.__file__).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in tree.body  # module level only: loaders import sklearn and mnist1d inside
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    allowed = {*sys.stdlib_module_names, "numpy", "torch", "workers"}
    assert {name for name in imported if name.split(".")[0] not in allowed} == set()


# --- bundled, synthetic and generated ------------------------------------------------------

SMALL: list[tuple[str, dict[str, Any], tuple[int, int, int]]] = [  # name, params, (N, D, classes)
    ("digits", {}, (1797, 64, 10)),
    ("iris", {}, (150, 4, 3)),
    ("wine", {}, (178, 13, 3)),
    ("breast_cancer", {}, (569, 30, 2)),
    ("mnist1d", {"n_samples": 300}, (300, 40, 10)),
    ("moons", {"n_samples": 300, "noise": 0.2}, (300, 2, 2)),
    ("circles", {"n_samples": 300, "factor": 0.3}, (300, 2, 2)),
    ("blobs", {"n_samples": 300, "n_features": 5, "centers": 4}, (300, 5, 4)),
    ("spirals", {"n_samples": 300, "n_classes": 3, "turns": 2.0}, (300, 2, 3)),
    (
        "classification",
        {"n_samples": 400, "n_features": 8, "n_informative": 4, "n_classes": 3},
        (400, 8, 3),
    ),
]


@pytest.mark.parametrize(("name", "given", "expected"), SMALL, ids=[s[0] for s in SMALL])
def test_loads_split_stratified_and_seeded(
    name: str, given: dict[str, Any], expected: tuple[int, int, int]
) -> None:
    n, features, classes = expected
    splits = load_named(name, seed=3, **given)
    sizes = [len(splits.y_train), len(splits.y_val), len(splits.y_test)]
    assert sum(sizes) == n and [len(splits.x_train), len(splits.x_val), len(splits.x_test)] == sizes
    assert splits.input_shape == (features,) and splits.n_outputs == classes
    assert splits.task == "classification" and splits.y_train.dtype == torch.long
    assert splits.x_train.dtype == torch.float32
    assert abs(sizes[1] / n - 0.2) < 0.03 and abs(sizes[2] / n - 0.2) < 0.03
    shares = [torch.bincount(y, minlength=classes) / len(y) for y in (splits.y_train, splits.y_val)]
    assert torch.allclose(shares[0], shares[1], atol=0.03), shares
    assert splits.x_train.mean(0).abs().max() < 1e-4  # standardised on the training split

    again, other = load_named(name, seed=3, **given), load_named(name, seed=4, **given)
    assert all(torch.equal(getattr(splits, f), getattr(again, f)) for f in ("x_train", "y_val"))
    assert not torch.equal(splits.x_train, other.x_train)


@pytest.mark.parametrize("name", ["mnist1d", "moons", "spirals", "classification"])
def test_generated_data_depends_on_the_seed_and_not_only_its_split(name: str) -> None:
    loader = DATASETS.get(name)
    params = params_of(name, n_samples=200)
    first, again, other = loader(1, **params), loader(1, **params), loader(2, **params)
    assert np.array_equal(first.x, again.x) and np.array_equal(first.y, again.y)
    assert not np.array_equal(np.sort(first.x, axis=0), np.sort(other.x, axis=0))


def test_mnist1d_leaves_the_global_generators_as_they_were() -> None:
    random.seed(7)
    np.random.seed(7)
    expected = random.random(), np.random.rand()
    random.seed(7)
    np.random.seed(7)
    DATASETS.get("mnist1d")(0, n_samples=100)
    assert (random.random(), np.random.rand()) == expected


def test_mnist1d_is_generated_once_per_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = DATASETS.get("mnist1d")(3, n_samples=100, cache=str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["mnist1d-100-3.npz"]
    import mnist1d.data

    def refuse(*_: object) -> None:
        raise AssertionError("generated again instead of read from the cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", refuse)
    again = DATASETS.get("mnist1d")(3, n_samples=100, cache=str(tmp_path))
    assert np.array_equal(first.x, again.x) and np.array_equal(first.y, again.y)


def test_spirals_have_one_arm_per_class_within_the_unit_disc() -> None:
    raw = DATASETS.get("spirals")(0, n_samples=600, n_classes=3, noise=0.0, turns=1.0)
    assert np.bincount(raw.y).tolist() == [200, 200, 200]
    assert np.linalg.norm(raw.x, axis=1).max() <= 1.0


def test_regression_gives_standardised_float_targets() -> None:
    splits = load_named("regression", seed=1, n_samples=200, n_features=6, n_informative=3)
    assert splits.task == "regression" and splits.n_outputs == 1
    assert splits.y_train.dtype == torch.float32 and splits.y_train.ndim == 1
    assert splits.input_shape == (6,)
    assert abs(float(splits.y_train.mean())) < 1e-4 and abs(float(splits.y_train.std()) - 1) < 0.01
    other = load_named("regression", seed=2, n_samples=200, n_features=6, n_informative=3)
    assert not torch.equal(splits.y_train, other.y_train)


def test_standardise_matches_numpy_across_chunks() -> None:
    rng = np.random.default_rng(0)
    tabular = rng.normal(5.0, 3.0, size=(5000, 3))
    tabular[:, 2] = 4.0  # a constant feature stays constant (scale 1)
    train = np.arange(0, 5000, 2)
    std = tabular[train].std(0)
    expected = (tabular - tabular[train].mean(0)) / np.where(std == 0, 1, std)
    np.testing.assert_allclose(standardise(tabular, train), expected, atol=1e-5)
    images = rng.integers(0, 256, size=(5000, 1, 4, 4), dtype=np.uint8)
    scaled = standardise(images, train)
    assert scaled.dtype == np.float32 and scaled.shape == images.shape
    pixels = images[train].astype(np.float64)
    np.testing.assert_allclose(scaled, (images - pixels.mean()) / pixels.std(), atol=1e-4)


def test_stratified_subset_keeps_every_class_share() -> None:
    y = np.repeat([0, 1, 2], [500, 300, 200])
    keep = stratified_subset(y, 101, seed=0)
    assert len(keep) == 101 and len(set(keep)) == 101
    assert np.bincount(y[keep]).tolist() in ([51, 30, 20], [50, 31, 20], [50, 30, 21])
    assert not np.array_equal(keep, stratified_subset(y, 101, seed=1))


# --- files in the data folder --------------------------------------------------------------

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    data = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_idx_set(folder: Path, gz: tuple[bool, bool, bool, bool]) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    arrays = (
        rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8),
        np.repeat(np.arange(3, dtype=np.uint8), 10),
        rng.integers(0, 256, size=(9, 28, 28), dtype=np.uint8),
        np.repeat(np.arange(3, dtype=np.uint8), 3),
    )
    for file, array, zipped in zip(IDX_FILES, arrays, gz, strict=True):
        write_idx(folder / file, array, zipped)
    return arrays


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize(
    "gz", [(False,) * 4, (True,) * 4, (True, False, False, True)], ids=["plain", "gz", "mixed"]
)
def test_idx_files_load_as_single_channel_images(
    tmp_path: Path, name: str, gz: tuple[bool, bool, bool, bool]
) -> None:
    train_x, train_y, test_x, test_y = write_idx_set(tmp_path / name, gz)
    raw = DATASETS.get(name)(0, folder=str(tmp_path))
    assert raw.x.shape == (39, 1, 28, 28)
    np.testing.assert_array_equal(raw.x[:, 0], np.concatenate([train_x, test_x]))
    np.testing.assert_array_equal(raw.y, np.concatenate([train_y, test_y]))

    splits = load(DatasetConfig(name, {"folder": str(tmp_path)}, 0.2, 0.2, 0))
    assert splits.input_shape == (1, 28, 28) and splits.n_outputs == 3
    assert len(splits.y_train) + len(splits.y_val) + len(splits.y_test) == 39
    assert abs(float(splits.x_train.mean())) < 1e-4 and abs(float(splits.x_train.std()) - 1) < 1e-3


def test_max_samples_takes_a_seeded_stratified_subsample(tmp_path: Path) -> None:
    write_idx_set(tmp_path / "mnist", (False,) * 4)
    loader = DATASETS.get("mnist")
    raw = loader(0, folder=str(tmp_path), max_samples=15)
    assert raw.x.shape == (15, 1, 28, 28) and np.bincount(raw.y).tolist() == [5, 5, 5]
    assert np.array_equal(raw.x, loader(0, folder=str(tmp_path), max_samples=15).x)
    assert not np.array_equal(raw.x, loader(1, folder=str(tmp_path), max_samples=15).x)


def test_an_idx_file_with_the_wrong_magic_number_is_refused(tmp_path: Path) -> None:
    write_idx_set(tmp_path / "mnist", (False,) * 4)
    labels = tmp_path / "mnist" / "train-labels-idx1-ubyte"
    write_idx(labels, np.zeros((30, 28, 28), np.uint8), gz=False)  # images where labels belong
    with pytest.raises(ValueError, match="magic number 2049"):
        DATASETS.get("mnist")(0, folder=str(tmp_path))


def cifar_batch(rng: np.random.Generator, n: int, numpy_core: bool = False) -> bytes:
    batch = {
        b"batch_label": b"a tiny batch",
        b"labels": [int(label) for label in rng.integers(0, 10, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [b"image.png"] * n,
    }
    data = pickle.dumps(batch, protocol=2)
    # The published batches were pickled by Python 2 and numpy 1 (numpy.core.multiarray).
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if numpy_core else data


def write_cifar(folder: Path) -> list[dict[bytes, Any]]:
    rng = np.random.default_rng(0)
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    batches = []
    for index, file in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        data = cifar_batch(rng, 4 + index, numpy_core=index % 2 == 0)
        (root / file).write_bytes(data)
        batches.append(pickle.loads(data, encoding="bytes"))
    return batches


def test_cifar_batches_load_as_colour_images(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path)
    raw = DATASETS.get("cifar10")(0, folder=str(tmp_path))
    assert raw.x.shape == (39, 3, 32, 32)
    data = np.concatenate([batch[b"data"] for batch in batches])
    np.testing.assert_array_equal(raw.x[:, 0].reshape(39, -1), data[:, :1024])  # red first
    np.testing.assert_array_equal(raw.x[:, 2, 31], data[:, -32:])  # the blue's last row
    np.testing.assert_array_equal(raw.y, np.concatenate([batch[b"labels"] for batch in batches]))

    splits = load(DatasetConfig("cifar10", {"folder": str(tmp_path)}, 0.2, 0.2, 0))
    assert splits.input_shape == (3, 32, 32)
    assert len(splits.y_train) + len(splits.y_val) + len(splits.y_test) == 39


class _Planted:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this must not run",))


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    planted = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Planted()}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(planted))
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.print"):
        DATASETS.get("cifar10")(0, folder=str(tmp_path))


@pytest.mark.parametrize(
    ("name", "subfolder", "files"),
    [
        ("mnist", "mnist", IDX_FILES),
        ("fashion_mnist", "fashion_mnist", IDX_FILES),
        ("cifar10", "cifar-10-batches-py", ("data_batch_1", "data_batch_5", "test_batch")),
    ],
)
def test_a_missing_folder_names_the_folder_and_the_files(
    tmp_path: Path, name: str, subfolder: str, files: tuple[str, ...]
) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        load(DatasetConfig(name, {"folder": str(tmp_path / "data")}))
    message = str(caught.value)
    assert str(tmp_path / "data" / subfolder) in message
    assert all(file in message for file in files)
    assert "ownload" in message


def test_a_missing_file_is_named_among_the_expected_ones(tmp_path: Path) -> None:
    write_idx_set(tmp_path / "mnist", (True,) * 4)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing: t10k-labels-idx1-ubyte\. Download"):
        DATASETS.get("mnist")(0, folder=str(tmp_path))


# --- uploads -------------------------------------------------------------------------------


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_an_uploaded_classification_set_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = np.repeat(np.array(["cat", "dog", "eel"]), 20)
    classes = np.array(["cat", "dog", "eel"])  # extra arrays (the class names) are ignored
    npz = npz_bytes(x=x, y=y, task=np.array("classification"), classes=classes)
    raw = DATASETS.get("upload")(0, npz=npz)
    assert raw.task == "classification"
    np.testing.assert_array_equal(raw.x, x)
    np.testing.assert_array_equal(raw.y, y)
    splits = load(DatasetConfig("upload", {"npz": npz}))
    assert splits.input_shape == (5,) and splits.n_outputs == 3
    assert torch.bincount(splits.y_val).tolist() == [4, 4, 4]


def test_an_uploaded_regression_set_round_trips() -> None:
    x = np.arange(80, dtype=np.float32).reshape(40, 2)
    npz = npz_bytes(x=x, y=x.sum(1) * 3.0, task=np.array("regression"))
    splits = load(DatasetConfig("upload", {"npz": npz}))
    assert splits.task == "regression" and splits.n_outputs == 1
    assert splits.y_train.dtype == torch.float32


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 2)), "y": np.zeros(4)}, "lacks the arrays task"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3), "task": np.array("regression")}, "3 targets"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4), "task": np.array("ranking")}, "'ranking'"),
    ],
)
def test_a_malformed_upload_says_what_is_wrong(arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DATASETS.get("upload")(0, npz=npz_bytes(**arrays))


# --- the spec ------------------------------------------------------------------------------


def spec_errors(dataset: dict[str, Any]) -> list[str]:
    spec = {"dataset": dataset, "model": {"name": "mlp"}, "optimizers": [{"name": "sgd"}]}
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(spec)
    return [str(error) for error in field_errors(caught.value.errors())]


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ({"name": "moons", "noise": -0.1}, "dataset.noise: Input should be greater than or equal"),
        ({"name": "circles", "factor": 1.0}, "dataset.factor: Input should be less than 1"),
        ({"name": "blobs", "centers": 1}, "dataset.centers: Input should be greater than or equal"),
        ({"name": "spirals", "n_classes": 11}, "dataset.n_classes: Input should be less than"),
        ({"name": "spirals", "turns": 0}, "dataset.turns: Input should be greater than 0"),
        ({"name": "mnist1d", "n_samples": 155}, "dataset.n_samples: Input should be a multiple"),
        ({"name": "mnist", "max_samples": 10}, "dataset.max_samples: Input should be greater"),
        ({"name": "cifar10", "max_samples": "all"}, "dataset.max_samples: Input should be a valid"),
        ({"name": "upload", "id": "not-an-id"}, "dataset.id: Input should be a valid UUID"),
        ({"name": "upload"}, "dataset.id: Field required"),
        ({"name": "iris", "n_samples": 10}, "dataset: unknown key 'n_samples'"),
        (
            {"name": "regression", "n_features": 3, "n_informative": 5},
            "dataset: n_informative (5) must not exceed n_features (3)",
        ),
    ],
)
def test_bad_parameters_name_their_field(dataset: dict[str, Any], expected: str) -> None:
    [message] = spec_errors(dataset)
    assert message.startswith(expected), message


def test_every_sample_spec_validates_with_its_defaults() -> None:
    for name in SAMPLE_MODELS:
        given = {"id": str(uuid.uuid4())} if name == "upload" else {}
        spec = JobSpec.model_validate(
            {
                "dataset": {"name": name, **given},
                "model": {"name": "mlp"},
                "optimizers": [{"name": "sgd"}],
            }
        )
        expected = "regression" if name == "regression" else "classification"
        assert dataset_task(spec.dataset) == expected


def test_digits_read_without_scikit_learn_equal_its_load_digits() -> None:
    """The lecture's data set from scikit-learn's file, as ``load_digits`` returns it."""
    from sklearn.datasets import load_digits

    from workers.engine.datasets import _sklearn_data_file

    assert _sklearn_data_file("digits.csv.gz") is not None  # the fast path is the one tested
    raw, bunch = DATASETS.get("digits")(0), load_digits()
    assert raw.x.dtype == bunch.data.dtype and raw.y.dtype == bunch.target.dtype
    assert np.array_equal(raw.x, bunch.data) and np.array_equal(raw.y, bunch.target)

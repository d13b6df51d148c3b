"""Data sets: a registry of loaders, and ``load`` which splits and scales what they return.

A loader is ``(seed, **params) -> RawData``; its keyword parameters are the spec's
(services/spec/data.py) plus what the adapter adds: ``folder`` (the configured data folder)
for file data sets, ``npz`` (the stored bytes) for uploads. scikit-learn and mnist1d are only
*sources* of data here; they are imported inside the loaders that need them, so the engine's
own imports stay torch, numpy and the standard library. Landscapes (2-D test functions) are
not data sets of samples: they live in workers/engine/landscapes.py.

File data sets join their official train and test parts: optbench makes its own seeded,
stratified train/validation/test splits for every data set alike.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from workers.engine import datafiles
from workers.engine.config import DatasetConfig
from workers.engine.registry import Registry
from workers.engine.splits import split_indices, standardise, stratified_subset

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class RawData:
    """What a loader returns: features (N x D, or N x C x H x W for images) and targets."""

    x: np.ndarray
    y: np.ndarray
    task: Task = "classification"


Loader = Callable[..., RawData]
DATASETS: Registry[Loader] = Registry("dataset")


@dataclass(frozen=True)
class Splits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: Task
    n_outputs: int  # classes, or 1 for regression

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape)

    def to(self, device: str, dtype: torch.dtype = torch.float32) -> Splits:
        """On ``device``, with floating-point tensors (features, regression targets) in
        ``dtype``; class labels stay integers."""
        moved = {
            name: _cast(getattr(self, name).to(device), dtype)
            for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        }
        return Splits(**moved, task=self.task, n_outputs=self.n_outputs)


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


# --- bundled with scikit-learn -------------------------------------------------------------


def _bundled(name: str) -> Loader:
    def loader(seed: int) -> RawData:
        from sklearn import datasets

        bunch: Any = getattr(datasets, f"load_{name}")()
        return RawData(bunch.data, bunch.target)

    loader.__name__ = f"_{name}"
    return loader


for _name in ("iris", "wine", "breast_cancer"):
    DATASETS.register(_name)(_bundled(_name))


@DATASETS.register("digits")
def _digits(seed: int) -> RawData:
    """scikit-learn's bundled digits, read from its file as ``load_digits`` reads it (the
    gzipped CSV through ``np.loadtxt``, the last column the class), without importing
    scikit-learn: the lecture's data set then costs a fresh worker process no second of
    imports (scikit-learn and SciPy, 0.9 s on the 2-core VM) before its first job. Where
    the file is not where scikit-learn keeps it, ``load_digits`` itself."""
    path = _sklearn_data_file("digits.csv.gz")
    if path is None:
        return _bundled("digits")(seed)
    with gzip.open(path, mode="rt", encoding="utf-8") as text:
        data = np.loadtxt(text, delimiter=",")
    return RawData(data[:, :-1], data[:, -1].astype(int, copy=False))


def _sklearn_data_file(name: str) -> Path | None:
    """A file of ``sklearn/datasets/data``, found without importing scikit-learn (finding
    a top-level package's spec does not run it); None when it is not there."""
    found = importlib.util.find_spec("sklearn")
    locations = list(found.submodule_search_locations or []) if found else []
    for location in locations:
        path = Path(location) / "datasets" / "data" / name
        if path.is_file():
            return path
    return None


# --- generated -----------------------------------------------------------------------------


@DATASETS.register("mnist1d")
def _mnist1d(seed: int, n_samples: int = 5000, cache: str | None = None) -> RawData:
    """Generated here by mnist1d's ``make_dataset`` (never its download path), its train and
    test parts joined. It seeds Python's and numpy's global generators, so they are restored.

    Generating 5,000 samples takes about 0.7 s, paid again by every worker process that
    trains a part of the job; with ``cache`` (a folder) the arrays are kept there as
    ``mnist1d-<samples>-<seed>.npz`` and read back in milliseconds."""
    path = Path(cache) / f"mnist1d-{n_samples}-{seed}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as stored:
            return RawData(stored["x"], stored["y"])
    raw = _generate_mnist1d(seed, n_samples)
    if path is not None:
        _save_atomically(path, x=raw.x, y=raw.y)
    return raw


def _save_atomically(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write an npz so that a concurrent reader sees the whole file or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as file:
        np.savez(file, x=x, y=y)
    os.replace(temporary, path)


def _generate_mnist1d(seed: int, n_samples: int) -> RawData:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = n_samples, seed
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return RawData(
        np.concatenate([data["x"], data["x_test"]]), np.concatenate([data["y"], data["y_test"]])
    )


@DATASETS.register("moons")
def _moons(seed: int, n_samples: int = 1000, noise: float = 0.1) -> RawData:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples, noise=noise, random_state=seed)
    return RawData(x, y)


@DATASETS.register("circles")
def _circles(seed: int, n_samples: int = 1000, noise: float = 0.1, factor: float = 0.5) -> RawData:
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples, noise=noise, factor=factor, random_state=seed)
    return RawData(x, y)


@DATASETS.register("blobs")
def _blobs(
    seed: int,
    n_samples: int = 1000,
    n_features: int = 2,
    centers: int = 3,
    cluster_std: float = 1.0,
) -> RawData:
    from sklearn.datasets import make_blobs

    x, y = make_blobs(
        n_samples, n_features, centers=centers, cluster_std=cluster_std, random_state=seed
    )
    return RawData(x, y)


@DATASETS.register("spirals")
def _spirals(
    seed: int, n_samples: int = 1000, n_classes: int = 2, noise: float = 0.05, turns: float = 1.5
) -> RawData:
    """One arm per class from the centre out to radius 1, the arms evenly apart in angle."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % n_classes
    t = rng.uniform(size=n_samples)  # position along the arm: 0 at the centre, 1 at its end
    angle = 2 * np.pi * (turns * t + y / n_classes)
    x = t[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return RawData(x + noise * rng.standard_normal((n_samples, 2)), y)


@DATASETS.register("classification")
def _classification(
    seed: int,
    n_samples: int = 2000,
    n_features: int = 20,
    n_informative: int = 10,
    n_classes: int = 4,
    class_sep: float = 1.0,
    flip_y: float = 0.01,
) -> RawData:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples,
        n_features,
        n_informative=n_informative,
        n_redundant=0,
        n_classes=n_classes,
        class_sep=class_sep,
        flip_y=flip_y,
        random_state=seed,
    )
    return RawData(x, y)


@DATASETS.register("regression")
def _regression(
    seed: int,
    n_samples: int = 1000,
    n_features: int = 10,
    n_informative: int = 5,
    noise: float = 10.0,
) -> RawData:
    from sklearn.datasets import make_regression

    x, y = make_regression(
        n_samples, n_features, n_informative=n_informative, noise=noise, random_state=seed
    )
    return RawData(x, y, "regression")


# --- files in the configured data folder ---------------------------------------------------


@DATASETS.register("mnist")
def _mnist(seed: int, folder: str, max_samples: int | None = None) -> RawData:
    return _subsample(RawData(*datafiles.read_idx_set(Path(folder), "mnist")), max_samples, seed)


@DATASETS.register("fashion_mnist")
def _fashion_mnist(seed: int, folder: str, max_samples: int | None = None) -> RawData:
    x, y = datafiles.read_idx_set(Path(folder), "fashion_mnist")
    return _subsample(RawData(x, y), max_samples, seed)


@DATASETS.register("cifar10")
def _cifar10(seed: int, folder: str, max_samples: int | None = None) -> RawData:
    """The python version's pickled batches, as N x 3 x 32 x 32."""
    return _subsample(RawData(*datafiles.read_cifar(Path(folder))), max_samples, seed)


def _subsample(raw: RawData, max_samples: int | None, seed: int) -> RawData:
    if max_samples is None or max_samples >= len(raw.y):
        return raw
    keep = stratified_subset(raw.y, max_samples, seed)
    return RawData(raw.x[keep], raw.y[keep], raw.task)


# --- uploads -------------------------------------------------------------------------------


@DATASETS.register("upload")
def _upload(seed: int, npz: bytes) -> RawData:
    """The stored, normalised NPZ of an upload: ``x`` (N x D), ``y`` and a 0-d ``task``."""
    with np.load(io.BytesIO(npz), allow_pickle=False) as archive:
        missing = {"x", "y", "task"} - set(archive.files)
        if missing:
            raise ValueError(f"an uploaded data set lacks the arrays {', '.join(sorted(missing))}")
        x, y, task = archive["x"], archive["y"].reshape(-1), str(archive["task"])
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(
            f"an uploaded data set needs x of N x D and N targets, got x of "
            f"shape {x.shape} and {len(y)} targets"
        )
    if task not in ("classification", "regression"):
        raise ValueError(
            f"an uploaded data set's task is 'classification' or 'regression', not {task!r}"
        )
    return RawData(x, y, "regression" if task == "regression" else "classification")


def load(config: DatasetConfig) -> Splits:
    """Load, split (seeded; stratified for classification) and standardise with the training
    split's statistics: per feature for tabular data, one mean and scale for images."""
    raw = DATASETS.get(config.name)(config.seed, **config.params)
    classification = raw.task == "classification"
    y: np.ndarray
    if classification:
        labels, y = np.unique(np.asarray(raw.y).reshape(-1), return_inverse=True)
        n_outputs = len(labels)
    else:
        y = np.asarray(raw.y, dtype=np.float64).reshape(-1)
        n_outputs = 1
    train, val, test = split_indices(
        y, config.val_fraction, config.test_fraction, config.seed, stratify=classification
    )
    x = standardise(np.asarray(raw.x), train)
    if not classification:  # a standardised target makes the MSE scale-free (R² is unchanged)
        y = (y - y[train].mean()) / (y[train].std() or 1.0)

    def tensors(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.from_numpy(x[index])
        targets = torch.as_tensor(y[index], dtype=torch.long if classification else torch.float32)
        return features, targets

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = map(tensors, (train, val, test))
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, raw.task, n_outputs)

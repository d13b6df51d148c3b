"""Data sets: a registry of loaders, and ``load`` which splits and scales what they return.

A loader is ``(seed, **params) -> RawData``. scikit-learn and mnist1d are only *sources* of
data here; they are imported inside the loaders that need them, so the engine's own imports
stay torch and numpy. Landscapes (2-D test functions) are not data sets of samples: they
live in workers/engine/landscapes.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from workers.engine.config import DatasetConfig
from workers.engine.registry import Registry

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

    def to(self, device: str) -> Splits:
        moved = {
            name: getattr(self, name).to(device)
            for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        }
        return Splits(**moved, task=self.task, n_outputs=self.n_outputs)


@DATASETS.register("digits")
def _digits(seed: int) -> RawData:
    from sklearn.datasets import load_digits

    bunch: Any = load_digits()
    return RawData(bunch.data, bunch.target)


@DATASETS.register("classification")
def _classification(seed: int, **params: Any) -> RawData:
    from sklearn.datasets import make_classification

    x, y = make_classification(random_state=seed, n_redundant=0, **params)
    return RawData(x, y)


def split_indices(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices. Stratified: every class keeps its share in each split
    (at least one sample per class in val and test when the fractions are positive)."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == label) for label in np.unique(y)] if stratify else [np.arange(len(y))]
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for members in groups:
        members = rng.permutation(members)
        n_val = _share(len(members), val_fraction)
        n_test = min(_share(len(members), test_fraction), len(members) - n_val - 1)
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
        parts[0].append(members[n_val + n_test :])
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test


def _share(n: int, fraction: float) -> int:
    return 0 if fraction <= 0 else min(n - 1, max(1, math.ceil(n * fraction)))


def load(config: DatasetConfig) -> Splits:
    """Load, split (seeded; stratified for classification) and standardise with the training
    split's statistics: per feature for tabular data, one mean and scale for images."""
    raw = DATASETS.get(config.name)(config.seed, **config.params)
    x = np.asarray(raw.x, dtype=np.float64)
    classification = raw.task == "classification"
    if classification:
        labels, y = np.unique(raw.y, return_inverse=True)
        n_outputs = len(labels)
    else:
        y = np.asarray(raw.y, dtype=np.float64).reshape(-1)
        n_outputs = 1
    train, val, test = split_indices(y, config.val_fraction, config.test_fraction, config.seed,
                                     stratify=classification)
    axis = 0 if x.ndim == 2 else None  # images: one scale for all pixels
    mean, std = x[train].mean(axis=axis), x[train].std(axis=axis)
    std = np.where(std == 0, 1.0, std)  # constant features (digits' blank corners) stay constant
    x = (x - mean) / std
    if not classification:  # a standardised target makes the MSE scale-free (R² is unchanged)
        y = (y - y[train].mean()) / (y[train].std() or 1.0)

    def tensors(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.as_tensor(np.ascontiguousarray(x[index]), dtype=torch.float32)
        targets = torch.as_tensor(y[index], dtype=torch.long if classification else torch.float32)
        return features, targets

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = map(tensors, (train, val, test))
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, raw.task, n_outputs)

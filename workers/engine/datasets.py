"""Data sets: each loader returns features and integer labels; ``load`` splits and scales them.

scikit-learn is only a *source* of data here (its bundled digits, its generators); it is
imported inside the loaders that need it, so the engine's own imports stay torch and numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workers.engine.config import DatasetConfig
from workers.engine.registry import Registry

Loader = Callable[..., tuple[np.ndarray, np.ndarray]]
DATASETS: Registry[Loader] = Registry("dataset")


@dataclass(frozen=True)
class Splits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def to(self, device: str) -> Splits:
        return Splits(
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_val.to(device),
            self.y_val.to(device),
            self.n_classes,
        )


@DATASETS.register("digits")
def _digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch: Any = load_digits()
    return bunch.data, bunch.target


@DATASETS.register("classification")
def _classification(seed: int, **params: Any) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(random_state=seed, n_redundant=0, **params)
    return x, y


def stratified_split(
    y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): every class keeps its share in both splits, at least one each."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_val = min(len(members) - 1, max(1, math.ceil(len(members) * val_fraction)))
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def load(config: DatasetConfig) -> Splits:
    """Load, split (stratified, seeded) and standardise with the training split's statistics."""
    x, y = DATASETS.get(config.name)(config.seed, **config.params)
    labels, y = np.unique(y, return_inverse=True)
    train, val = stratified_split(y, config.val_fraction, config.seed)
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # constant features (digits' blank corner pixels) stay constant
    x = (x - mean) / std

    def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

    return Splits(
        tensor(x[train], torch.float32),
        tensor(y[train], torch.long),
        tensor(x[val], torch.float32),
        tensor(y[val], torch.long),
        len(labels),
    )

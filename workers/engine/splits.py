"""Splits and scaling: seeded (stratified) train/validation/test indices, class-preserving
subsamples, and features standardised with the training split's statistics."""

from __future__ import annotations

import math

import numpy as np


def stratified_subset(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subsample of ``size`` in which every class keeps its share
    (the classes with the largest remainders get the odd samples)."""
    labels, counts = np.unique(y, return_counts=True)
    quota = counts * size / len(y)
    take = np.floor(quota).astype(int)
    take[np.argsort(take - quota, kind="stable")[: size - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(y == label), count, replace=False)
        for label, count in zip(labels, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def split_indices(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices. Stratified: every class keeps its share in each split
    (at least one sample per class in val and test when the fractions are positive)."""
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(y == label) for label in np.unique(y)] if stratify else [np.arange(len(y))]
    )
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


_CHUNK = 2048  # rows at a time: a float64 copy of all of CIFAR-10 would take 1.5 GB


def standardise(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """float32 features scaled with the training rows' mean and std: per feature for tabular
    data (N x D), one mean and scale over all pixels for images. Moments add up in float64
    chunk by chunk, so a large image set is never copied whole in float64."""
    flat = x.reshape(len(x), -1)
    chunks = [train[start : start + _CHUNK] for start in range(0, len(train), _CHUNK)]
    mean = sum(flat[rows].sum(axis=0, dtype=np.float64) for rows in chunks) / len(train)
    images = x.ndim > 2
    if images:  # every pixel counts the same rows, so the mean of the means is the mean
        mean = np.full_like(mean, mean.mean())
    squares = sum(np.square(flat[rows] - mean).sum(axis=0) for rows in chunks)
    std = np.sqrt((np.full_like(squares, squares.mean()) if images else squares) / len(train))
    std = np.where(std == 0, 1.0, std)  # constant features (digits' blank corners) stay constant
    scaled = np.empty(flat.shape, dtype=np.float32)
    for start in range(0, len(flat), _CHUNK):
        scaled[start : start + _CHUNK] = (flat[start : start + _CHUNK] - mean) / std
    return scaled.reshape(x.shape)

"""The six landscape functions in numpy, for the contour plot: the API process must not
import torch, so they are re-implemented here; a unit test keeps them equal to
workers/engine/landscapes.py."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Function2D = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LandscapeView:
    """A 2-D function, its minima and the box it is usually drawn in."""

    function: Function2D
    minima: tuple[tuple[float, float], ...]
    x_range: tuple[float, float]
    y_range: tuple[float, float]


def _beale(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _rastrigin(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 20 + (x**2 - 10 * np.cos(2 * np.pi * x)) + (y**2 - 10 * np.cos(2 * np.pi * y))


def _quadratic(condition: float = 25.0) -> Function2D:
    return lambda x, y: 0.5 * (x**2 + condition * y**2)


_HIMMELBLAU_MINIMA = (
    (3.0, 2.0),
    (-2.805118, 3.131312),
    (-3.779310, -3.283186),
    (3.584428, -1.848126),
)
LANDSCAPES: dict[str, Callable[..., LandscapeView]] = {
    "rosenbrock": lambda: LandscapeView(
        lambda x, y: (1 - x) ** 2 + 100 * (y - x**2) ** 2, ((1.0, 1.0),), (-2.0, 2.0), (-1.0, 3.0)
    ),
    "beale": lambda: LandscapeView(_beale, ((3.0, 0.5),), (-4.5, 4.5), (-4.5, 4.5)),
    "himmelblau": lambda: LandscapeView(
        lambda x, y: (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2,
        _HIMMELBLAU_MINIMA,
        (-5.0, 5.0),
        (-5.0, 5.0),
    ),
    "rastrigin": lambda: LandscapeView(_rastrigin, ((0.0, 0.0),), (-5.12, 5.12), (-5.12, 5.12)),
    "saddle": lambda: LandscapeView(lambda x, y: x**2 - y**2, (), (-2.0, 2.0), (-2.0, 2.0)),
    "quadratic": lambda condition=25.0: LandscapeView(
        _quadratic(condition), ((0.0, 0.0),), (-5.0, 5.0), (-3.0, 3.0)
    ),
}


def _view_box(default: tuple[float, float], values: Sequence[float]) -> tuple[float, float]:
    """The default box grown to show the points, but never more than one span each way."""
    lo, hi = default
    span = hi - lo
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        lo = max(min(lo, min(finite)), default[0] - span)
        hi = min(max(hi, max(finite)), default[1] + span)
    pad = (hi - lo) * 0.03 if (lo, hi) != default else 0.0
    return lo - pad, hi + pad

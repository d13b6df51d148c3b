"""Series helpers: smoothing, and the mean and min-max over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def ema(values: Sequence[float | None], smoothing: float) -> list[float | None]:
    """Debiased exponential moving average (TensorBoard's): a missing value stays missing and
    does not move the average."""
    if smoothing <= 0:
        return list(values)
    out: list[float | None] = []
    average, weight = 0.0, 0.0
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(None)
            continue
        average = smoothing * average + (1 - smoothing) * value
        weight = smoothing * weight + (1 - smoothing)
        out.append(average / weight)
    return out


@dataclass
class OverSeeds:
    x: list[float] = field(default_factory=list)
    mean: list[float | None] = field(default_factory=list)
    low: list[float | None] = field(default_factory=list)
    high: list[float | None] = field(default_factory=list)
    seeds: int = 0


def over_seeds(curves: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> OverSeeds:
    """Mean and min-max over runs at each x (a run that stopped early just stops counting)."""
    by_x: dict[float, list[float]] = {}
    for xs, ys in curves:
        for x, y in zip(xs, ys, strict=True):
            if x is not None and y is not None and math.isfinite(y):
                by_x.setdefault(x, []).append(y)
    out = OverSeeds(seeds=sum(1 for _, ys in curves if any(v is not None for v in ys)))
    for x in sorted(by_x):
        values = by_x[x]
        out.x.append(x)
        out.mean.append(statistics.fmean(values))
        out.low.append(min(values))
        out.high.append(max(values))
    return out


def _all_positive(groups: Sequence[OverSeeds]) -> bool:
    values = [v for g in groups for v in g.low if v is not None]
    return bool(values) and min(values) > 0

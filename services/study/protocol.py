"""The study's numbers: a trial's selection score, the best trial of an entry, and the
expected best score after k trials (Dodge et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def selection_score(epochs: Mapping[str, Sequence[Any]], column: str, higher: bool) -> float | None:
    """The metric at its best epoch (validation columns: the validation split only); None
    when no epoch has a finite value (a run that diverged at once)."""
    values = [float(v) for v in epochs.get(column, []) if v is not None and math.isfinite(v)]
    if not values:
        return None
    return max(values) if higher else min(values)


def best(scored: Sequence[tuple[Any, float | None]], higher: bool) -> Any | None:
    """The item with the best finite score (the first of equals), or None."""
    finite = [(item, s) for item, s in scored if s is not None and math.isfinite(s)]
    if not finite:
        return None
    pick = max if higher else min
    return pick(finite, key=lambda pair: pair[1])[0]


def expected_best_of_k(scores: Sequence[float], higher: bool = True) -> list[float]:
    """E[best of k trials drawn from these N] for k = 1..N, the N scores sorted from worst
    to best: Σᵢ v₍ᵢ₎·[(i/N)ᵏ - ((i-1)/N)ᵏ] (sampling with replacement, Dodge et al. 2019)."""
    ordered = sorted(scores) if higher else sorted(scores, reverse=True)
    n = len(ordered)
    return [
        sum(v * ((i / n) ** k - ((i - 1) / n) ** k) for i, v in enumerate(ordered, start=1))
        for k in range(1, n + 1)
    ]

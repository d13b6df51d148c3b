"""Which trials stop at a rung (no torch: the engine's Pruner asks, tests check the rules).

At a rung (an epoch), among the trials of one entry that train together and are still
training, by their selection metric's value at that epoch (None: no value, the worst):

- ``successive_halving`` keeps the best ceil(n / reduction_factor) (ties: the first), and
  stops the rest;
- ``median`` stops each trial strictly worse than the median of the n values (it needs
  three or more trials: with fewer there is no median worth the name).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def _order(value: float | None, higher: bool) -> float:
    if value is None or not math.isfinite(value):
        return math.inf
    return -value if higher else value


def to_prune(
    rule: str,
    scores: Mapping[K, float | None],
    *,
    higher: bool,
    reduction_factor: int,
) -> set[K]:
    """The keys of ``scores`` (trial → value at the rung) that stop here."""
    keys = list(scores)
    if rule == "successive_halving":
        keep = math.ceil(len(keys) / reduction_factor)
        ranked = sorted(keys, key=lambda k: _order(scores[k], higher))  # stable: first wins
        return set(ranked[keep:])
    if rule == "median":
        if len(keys) < 3:
            return set()
        middle = statistics.median(_order(scores[k], higher) for k in keys)
        return {k for k in keys if _order(scores[k], higher) > middle}
    raise ValueError(f"unknown pruning rule '{rule}'")

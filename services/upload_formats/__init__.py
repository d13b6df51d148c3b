"""Parsers of uploaded data sets, one per format: ``npz_format`` and ``csv_format``.

Each turns the upload's bytes into float32 features (N x D, checked finite within float32
range), labels (``numeric`` values or ``TextLabels``) and a ``Describe`` that names where a
feature value came from, in time linear in the upload and memory bounded by what it unpacks
to; ``services/uploads.py`` checks the data's sanity and stores it. Every problem with the
upload is an ``InvalidSpec`` (422) or a ``PayloadTooLarge`` (413) naming what to change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Describe = Callable[[int, int], str]  # (sample, feature) -> where that value came from
MAX_CLASSES = 1000
FLOAT32_MAX = float(np.finfo(np.float32).max)
FINITE_MESSAGE = "features must be finite numbers within float32 range"


@dataclass(frozen=True)
class TextLabels:
    """Labels that are text, encoded: ``names[codes[i]]`` is sample i's label. Never one
    fixed-width string per sample (one long label would widen every row to its length)."""

    names: np.ndarray  # str, distinct
    codes: np.ndarray  # int, one per sample


def listing(names: Sequence[str], limit: int = 50) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def out_of_range(values: np.ndarray) -> np.ndarray:
    """Where ``values`` are not finite or would not be as float32 (a boolean mask)."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)

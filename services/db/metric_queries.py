"""Metric reads: columnar series per run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.db.models import EPOCH_FIELDS, STEP_FIELDS, EpochMetric, StepMetric


def series(
    session: Session, run_ids: Iterable[int], granularity: str = "step"
) -> dict[int, dict[str, list[Any]]]:
    """Columnar series per run: ``{run_id: {"step": [...], "loss": [...], ...}}``."""
    model, fields = (
        (StepMetric, STEP_FIELDS) if granularity == "step" else (EpochMetric, EPOCH_FIELDS)
    )
    key = model.step if granularity == "step" else model.epoch
    ids = list(run_ids)
    result: dict[int, dict[str, list[Any]]] = {rid: {f: [] for f in fields} for rid in ids}
    query = (
        select(model.run_id, *(getattr(model, f) for f in fields))
        .where(model.run_id.in_(ids))
        .order_by(model.run_id, key)
    )
    for row in session.execute(query):
        columns = result[row[0]]
        for name, value in zip(fields, row[1:], strict=True):
            columns[name].append(value)
    return result


def count_steps(session: Session, run_ids: Iterable[int]) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(StepMetric).where(StepMetric.run_id.in_(list(run_ids)))
        )
        or 0
    )

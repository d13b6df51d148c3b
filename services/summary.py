"""Per-optimizer summary of a job (DESIGN.md "Convergence metrics").

- steps-to-target: the global step at the end of the first epoch whose target metric
  reached the target; epochs-to-target and time-to-target (training seconds) likewise.
  A run that never reaches it is *not reached* (it counts in the success rate, never as
  the budget).
- Over seeds: medians of the reached runs, means of final/best values, and the share of
  seeds that reached the target.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from services.db import metric_queries
from services.db.models import Job
from services.spec import JobSpec, TargetSpec


@dataclass(frozen=True)
class RunView:
    """What the summary needs of a run: its label, whether it diverged, its epoch series."""

    label: str
    diverged: bool
    epochs: Mapping[str, Sequence[Any]]  # columnar: epoch, step, train_loss, val_accuracy, ...


def _first_reached(target: TargetSpec, epochs: Mapping[str, Sequence[Any]]) -> int | None:
    for index, value in enumerate(epochs.get(target.column, [])):
        if value is not None and target.reached(value):
            return index
    return None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(spec: JobSpec, runs: Sequence[RunView]) -> dict[str, Any]:
    by_label: dict[str, list[RunView]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    target = spec.effective_target
    rows = []
    for entry in spec.optimizers:
        label = entry.display_label
        group = by_label.get(label, [])
        steps, epochs_to, seconds = [], [], []
        for run in group:
            hit = _first_reached(target, run.epochs)
            if hit is not None:
                steps.append(run.epochs["step"][hit])
                epochs_to.append(run.epochs["epoch"][hit])
                seconds.append(run.epochs["train_seconds"][hit])
        finals = [run.epochs["train_loss"][-1] for run in group if run.epochs["train_loss"]]
        bests = [
            max(a for a in run.epochs["val_accuracy"] if a is not None)
            for run in group
            if any(a is not None for a in run.epochs["val_accuracy"])
        ]
        distances = [
            run.epochs["distance"][-1]
            for run in group
            if run.epochs.get("distance") and run.epochs["distance"][-1] is not None
        ]
        rows.append(
            {
                "label": label,
                "optimizer": entry.name,
                "runs": len(group),
                "final_train_loss": _mean(finals),
                "best_val_accuracy": _mean(bests),  # R² for regression
                "final_distance": _mean(distances),
                "steps_to_target": _median(steps),
                "epochs_to_target": _median(epochs_to),
                "seconds_to_target": _median(seconds),
                "target_reached": f"{len(steps)}/{len(group)}",
                "diverged": sum(run.diverged for run in group),
            }
        )
    return {"task": spec.task, "target": target.model_dump(), "optimizers": rows}


def job_summary(session: Session, job: Job) -> dict[str, Any]:
    """Summarize a job from its stored epoch metrics (finished or still running)."""
    epochs = metric_queries.series(session, [run.id for run in job.runs], granularity="epoch")
    views = [RunView(run.label, run.diverged, epochs[run.id]) for run in job.runs]
    return summarize(JobSpec.model_validate(job.spec), views)

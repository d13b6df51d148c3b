"""A suite's scores document from its stored jobs (what ``GET /v1/suites/{id}/scores``
returns; the numbers: services/suite/scores.py).

Per child job (one workload, one study) the times come from the stored epoch series, as
every summary reads them (services/summary.py: the global step, the epoch and the training
seconds at the end of the first epoch that reached the target; a diverged run reached
nothing):

- a trial's time to target (the runs of role ``trial``): its ``steps_to_target`` for the
  ``steps`` measure, its ``seconds_to_target`` (the member's attributed training seconds,
  evaluation excluded) for ``seconds``; ``None`` (a miss) where it never reached the target;
- a rerun's ``epochs_to_target`` (role ``rerun``): DeepOBS's speed.

A workload's ``budget``, what a miss counts as in the speedup minus one: for steps the
longest full trial of any optimizer on it (``Run.total_steps``: epochs x steps per epoch;
gd's one step per epoch makes its trials shorter, so the mini-batch optimizers' length is
the budget); for seconds the longest stored trial's training seconds (reported as
``miss_value`` only; ``budget`` is ``null`` then, there being no fixed one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from services.db import metric_queries
from services.db.models import RERUN, TRIAL, Run, Suite
from services.spec import TargetSpec
from services.spec.suite import SuiteSpec
from services.suite import scores
from services.summary import RunView, _run_values

MEASURE_KEY = {"steps": "steps_to_target", "seconds": "seconds_to_target"}


def run_times(
    target: TargetSpec, run: Run, epochs: Mapping[str, Sequence[Any]]
) -> dict[str, float | None]:
    """A run's steps, seconds and epochs to target (services/summary.py's definitions)."""
    values = _run_values(target, RunView(run.label, run.diverged, epochs, run.seed))
    keys = ("steps_to_target", "seconds_to_target", "epochs_to_target")
    return {key: values[key] for key in keys}


def _last_seconds(epochs: Mapping[str, Sequence[Any]]) -> float | None:
    seconds = [float(s) for s in epochs.get("train_seconds", ()) if s is not None]
    finite = [s for s in seconds if math.isfinite(s)]
    return finite[-1] if finite else None


def workload_times(
    spec: SuiteSpec,
    jobs_by_workload: Mapping[str, Sequence[Any]],
    epochs: Mapping[int, Mapping[str, Sequence[Any]]],
) -> list[scores.WorkloadTimes]:
    """Each workload's times per optimizer label and study (``jobs_by_workload``: the child
    jobs of each workload, with their runs; ``epochs``: the epoch series by run id)."""
    key = MEASURE_KEY[spec.time_measure]
    out = []
    for workload in spec.workloads:
        jobs = sorted(jobs_by_workload.get(workload.name, ()), key=lambda job: job.suite_study)
        trials: dict[str, list[list[float | None]]] = {label: [] for label in spec.labels}
        reruns: dict[str, list[float | None]] = {label: [] for label in spec.labels}
        lengths: list[float] = []
        for job in jobs:
            per_label: dict[str, list[float | None]] = {label: [] for label in spec.labels}
            for run in job.runs:
                if run.label not in per_label or run.role not in (TRIAL, RERUN):
                    continue
                times = run_times(workload.target, run, epochs.get(run.id, {}))
                if run.role == RERUN:
                    reruns[run.label].append(times["epochs_to_target"])
                    continue
                per_label[run.label].append(times[key])
                length = (
                    run.total_steps
                    if spec.time_measure == "steps"
                    else _last_seconds(epochs.get(run.id, {}))
                )
                if length is not None:
                    lengths.append(float(length))
            for label in spec.labels:
                trials[label].append(per_label[label])
        budget = max(lengths) if lengths else None
        out.append(scores.WorkloadTimes(workload.name, trials, reruns, budget))
    return out


def scores_document(session: Session, suite: Suite) -> dict[str, Any]:
    """The suite's scores (see the module docstring and services/suite/scores.py); the
    suite is loaded with its jobs and their runs."""
    spec = SuiteSpec.model_validate(suite.spec)
    by_workload: dict[str, list[Any]] = {}
    for job in suite.jobs:
        by_workload.setdefault(job.suite_workload or "", []).append(job)
    run_ids = [run.id for job in suite.jobs for run in job.runs if run.role in (TRIAL, RERUN)]
    epochs = metric_queries.series(session, run_ids, granularity="epoch")
    times = workload_times(spec, by_workload, epochs)
    scored = scores.score_suite(spec.labels, times, spec.reference_label, spec.r_max)
    workloads = []
    for workload, timed in zip(spec.workloads, times, strict=True):
        jobs = sorted(by_workload.get(workload.name, ()), key=lambda job: job.suite_study)
        steps = spec.time_measure == "steps"
        workloads.append(
            {
                "name": workload.name,
                "dataset": workload.dataset.name,  # type: ignore[attr-defined]
                "model": workload.model.name,
                "target": workload.target.model_dump(mode="json"),
                "epochs": workload.epochs,
                "budget": timed.budget if steps else None,
                "miss_value": None if timed.budget is None else timed.budget + 1,
                "jobs": [
                    {"study": job.suite_study, "job_id": str(job.id), "status": job.status}
                    for job in jobs
                ],
            }
        )
    return {
        "suite_id": str(suite.id),
        "name": suite.name,
        "status": suite.status,
        "definition": {
            "source": scores.SOURCE,
            "profile": scores.PROFILE_SOURCE,
            "notes": list(scores.NOTES),
        },
        "time_measure": spec.time_measure,
        "r_max": spec.r_max,
        "studies": spec.studies,
        "reference": spec.reference_label,
        "optimizers": spec.labels,
        "workloads": workloads,
        **scored,
        "speedup_note": scores.SPEEDUP_NOTE,
    }

"""Across jobs: any of the caller's jobs side by side (``GET /v1/compare``), and one optimizer
label's results over the caller's jobs on one data set (``GET /v1/optimizers/{label}/history``).

Both read what a job's own summary says (services/summary.py, stored when the job ended),
never recompute it, so a row here is the row ``GET /v1/jobs/{id}/summary`` shows.

**Compare.** Rows are aligned by optimizer label: the union of the jobs' labels, in the order
they first appear (the first job's spec order, then the labels only later jobs have), each
with one cell per job, in the order the jobs were named; a label a job does not have is an
explicit ``None`` in that job's cell. Each job comes with its setup (data set, model, epochs,
batch size, target) and ``differs`` names the setup keys whose values are not the same in
every job: numbers of jobs trained on other data, or to another target, are not comparable
as they stand, and the answer says so rather than hiding it. A running job's cells are its
summary so far (its ranks provisional, ``finished`` false).

**History.** The caller's *succeeded* jobs (a failed or cancelled job's ranks are over runs
cut short) whose spec names the data set (and model, when given) and that trained the label,
newest first: per job its id, name, creation time, model, epochs, the label's
hyperparameters (a plain job's run; a tuning study's rerun of its best trial) and the
label's summary row with its rank among ``labels`` rows. The aggregate is over the listed
jobs: per key metric (``HISTORY_METRICS``) the median, minimum and maximum over the jobs
that have a value, how often the label ranked first and its mean success rate.

One SQL statement reads the history, whatever the number of jobs: the jobs (filtered by
owner, status, data set and model on the stored spec's JSON, and by an ``EXISTS`` on a run
of the label) with the label's hyperparameters as a correlated scalar subquery (its first
non-trial run). tests/unit/test_comparison.py counts the statements on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import json
import statistics
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import BASELINE, FINISHED, RERUN, RUN_ROLE, SUCCEEDED, Job, Run
from services.db.session import unit_of_work
from services.errors import InvalidSpec, NotFound
from services.spec import DATASET_MODELS, MODEL_MODELS, JobSpec
from services.summary import current_summary, with_defaults
from services.uploads import owned_dataset

MAX_COMPARED_JOBS = 8  # the page draws one dash pattern per job; past a few it is noise
SETUP_KEYS = ("dataset", "model", "epochs", "batch_size", "target")
HISTORY_LIMIT, MAX_HISTORY_LIMIT = 200, 1000
# The summary row's values the history aggregates (those of them a task has: a landscape has
# no validation accuracy, a classification job no distance).
HISTORY_METRICS = (
    "best_val_accuracy",
    "final_train_loss",
    "steps_to_target",
    "seconds_to_target",
    "test_accuracy",
    "final_distance",
)


def invalid(parameter: str, message: str) -> InvalidSpec:
    """A 422 problem naming the query parameter to change."""
    return InvalidSpec(f"{parameter}: {message}", errors=[{"field": parameter, "message": message}])


def parse_job_ids(text: str) -> list[uuid.UUID]:
    """``a,b,...`` → the job ids, in order; a 422 naming ``jobs`` for an empty list, an id
    that is no UUID, an id named twice or more than ``MAX_COMPARED_JOBS`` ids."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise invalid("jobs", "name the jobs to compare, comma-separated: jobs=<id>,<id>")
    ids: list[uuid.UUID] = []
    for part in parts:
        if not part:
            raise invalid("jobs", f"an empty id in '{text}': separate the ids by one comma")
        try:
            key = uuid.UUID(part)
        except ValueError:
            raise invalid(
                "jobs", f"'{part}' is not a job id (a UUID, as GET /v1/jobs lists them)"
            ) from None
        if key in ids:
            raise invalid("jobs", f"job {key} is named twice; name each job once")
        ids.append(key)
    if len(ids) > MAX_COMPARED_JOBS:
        raise invalid(
            "jobs", f"{len(ids)} jobs named; at most {MAX_COMPARED_JOBS} can be compared at once"
        )
    return ids


def setup_of(job: Job) -> dict[str, Any]:
    """What a job trained on, as its spec says (defaults filled in): data set and model (the
    spec's objects), epochs, batch size and the effective target."""
    spec = JobSpec.model_validate(job.spec)
    return {
        "dataset": spec.dataset.model_dump(mode="json"),
        "model": spec.model.model_dump(mode="json"),
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "target": spec.effective_target.model_dump(mode="json"),
    }


def compare(job_ids: Sequence[uuid.UUID], *, owner: str | None) -> dict[str, Any]:
    """The jobs' summaries aligned by label (module docstring); NotFound for a job that does
    not exist or is another owner's, with the message ``GET /v1/jobs/{id}`` gives."""
    with unit_of_work() as session:
        found = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(job_ids)))}
        jobs = []
        for key in job_ids:
            job = found.get(key)
            if job is None or (owner is not None and job.owner != owner):
                raise NotFound(f"no job with id '{key}'")
            jobs.append(job)
        summaries = [current_summary(session, job) for job in jobs]
        setups = [setup_of(job) for job in jobs]
        described = [
            _job_entry(job, summary, setup)
            for job, summary, setup in zip(jobs, summaries, setups, strict=True)
        ]
    return {
        "jobs": described,
        "differs": [key for key in SETUP_KEYS if len({_key(s[key]) for s in setups}) > 1],
        "rows": aligned_rows(summaries),
    }


def _job_entry(job: Job, summary: Mapping[str, Any], setup: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "finished": job.status in FINISHED,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "task": summary.get("task"),
        "best": summary.get("best"),
        **setup,
    }


def _key(value: Any) -> str:
    """A hashable, order-independent form of a setup value (dicts compare by content)."""
    return json.dumps(value, sort_keys=True, default=str)


def aligned_rows(summaries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per label over all summaries (first appearance order), one cell per summary:
    that summary's row of the label, or None where it has none."""
    labels: list[str] = []
    by_label: list[dict[str, Mapping[str, Any]]] = []
    for summary in summaries:
        rows = {row["label"]: row for row in summary.get("optimizers", [])}
        labels += [label for label in rows if label not in labels]
        by_label.append(rows)
    return [{"label": label, "cells": [rows.get(label) for rows in by_label]} for label in labels]


# --- history --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryQuery:
    label: str
    dataset: str  # a catalog data set's name, or an uploaded data set's id
    model: str | None = None
    limit: int = HISTORY_LIMIT


def _dataset_condition(session: Session, dataset: str, owner: str | None) -> Any:
    """The SQL condition on the spec's data set: a catalog name (not ``upload``: uploads are
    named by their id), or an uploaded data set's id, which must be the caller's (NotFound
    otherwise, as ``GET /v1/datasets/{id}`` answers)."""
    name = Job.spec[("dataset", "name")].as_string()
    try:
        upload = uuid.UUID(dataset)
    except ValueError:
        upload = None
    if upload is not None:
        owned_dataset(session, upload, owner)
        return (name == "upload") & (Job.spec[("dataset", "id")].as_string() == str(upload))
    known = [d for d in DATASET_MODELS if d != "upload"]
    if dataset not in known:
        raise invalid(
            "dataset",
            f"no data set named '{dataset}'; use one of {', '.join(known)}, or an uploaded "
            "data set's id (GET /v1/datasets)",
        )
    return name == dataset


def history(query: HistoryQuery, *, owner: str | None) -> dict[str, Any]:
    """The label's rows over the caller's succeeded jobs on the data set (module docstring)."""
    if query.model is not None and query.model not in MODEL_MODELS:
        raise invalid(
            "model", f"no model named '{query.model}'; use one of {', '.join(MODEL_MODELS)}"
        )
    with unit_of_work() as session:
        on_dataset = _dataset_condition(session, query.dataset, owner)
        of_label = (Run.job_id == Job.id) & (Run.label == query.label)
        settings = (
            select(Run.hyperparameters)
            .where(of_label, Run.role.in_((RUN_ROLE, RERUN, BASELINE)))
            .order_by(Run.id)
            .limit(1)
            .correlate(Job)
            .scalar_subquery()
        )
        statement = (
            # The spec's model and epochs, not all of it (its optimizers, data set).
            select(
                Job.id,
                Job.name,
                Job.created_at,
                Job.spec["model"],
                Job.spec["epochs"],
                Job.summary,
                settings,
            )
            .where(Job.status == SUCCEEDED, on_dataset, select(Run.id).where(of_label).exists())
            .order_by(Job.created_at.desc(), Job.id)
            .limit(query.limit + 1)
        )
        if owner is not None:
            statement = statement.where(Job.owner == owner)
        if query.model is not None:
            statement = statement.where(Job.spec[("model", "name")].as_string() == query.model)
        found = list(session.execute(statement))
    items = [
        item
        for job_id, name, created, model, epochs, summary, settings_ in found[: query.limit]
        if (
            item := _history_item(
                query.label, job_id, name, created, model, epochs, summary, settings_
            )
        )
    ]
    return {
        "label": query.label,
        "dataset": query.dataset,
        "model": query.model,
        "items": items,
        "truncated": len(found) > query.limit,
        "aggregate": aggregate(items),
    }


def _history_item(
    label: str,
    job_id: uuid.UUID,
    name: str,
    created: Any,
    model: Mapping[str, Any] | None,
    epochs: Any,
    summary: Mapping[str, Any] | None,
    hyperparameters: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """One job's entry, or None when its stored summary has no row of the label (a job that
    ended without a summary, or whose runs of the label were only a study's trials)."""
    if not isinstance(summary, Mapping):
        return None
    rows = summary.get("optimizers", [])
    stored = next((r for r in rows if r.get("label") == label), None)
    if stored is None:
        return None
    # Defaults for this row only: filling every row's was most of the time of a long history.
    row = with_defaults({"optimizers": [stored]})["optimizers"][0]
    return {
        "job_id": job_id,
        "job_name": name,
        "created_at": created,
        "model": dict(model or {}),
        "epochs": int(epochs),
        "target": summary.get("target"),
        "task": summary.get("task"),
        "hyperparameters": None if hyperparameters is None else dict(hyperparameters),
        "labels": sum(r.get("rank") is not None for r in rows),
        "row": row,
    }


def describe_range(values: Sequence[float | None]) -> dict[str, Any]:
    kept = [float(v) for v in values if v is not None]
    return {
        "n": len(kept),
        "median": statistics.median(kept) if kept else None,
        "min": min(kept, default=None),
        "max": max(kept, default=None),
    }


def aggregate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Over the items: how many jobs, per metric its median/min/max over the jobs with a
    value, how many times the label ranked first (of the items whose row has a rank), and
    its mean success rate."""
    rows = [item["row"] for item in items]
    ranked = [row for row in rows if row.get("rank") is not None]
    rates = [row["success_rate"] for row in rows if row.get("success_rate") is not None]
    first = sum(row["rank"] == 1 for row in ranked)
    return {
        "jobs": len(items),
        "ranked_first": first,
        "ranked": len(ranked),
        "first_share": first / len(ranked) if ranked else None,
        "mean_success_rate": statistics.fmean(rates) if rates else None,
        "metrics": {
            name: describe_range([row.get(name) for row in rows]) for name in HISTORY_METRICS
        },
    }

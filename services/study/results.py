"""The study's answer: its trials as a table, the ``study`` block of its summary, and the
summary itself, ranked on the reruns (services/summary.py's machinery over those runs only).

Trials (``trials``, what ``GET /v1/jobs/{id}/trials`` lists): the runs of role ``trial``, in
the spec's entry order, then by trial number. A trial's ``status``:

- ``diverged``: its loss exploded or went non-finite (whatever else is true of it);
- ``pruned``: a rung stopped it (``rung`` = ``Run.pruned_at_epoch``; its steps stay stored);
- ``completed``: it trained every epoch; ``queued``, ``running``: not yet, or now;
- ``failed``, ``cancelled``: its job failed or was cancelled before it ended.

Its ``selection_score`` is the one stored when the search ended; before that it is computed
from its stored epochs the same way (services/study/protocol.py, the selection metric at its
best epoch), so a running trial shows its score so far.

The ``study`` block (``study_block``), per entry: the trial ``budget`` (an entry without a
search has one trial, its given values; a grid has at most its number of points), trials
drawn / completed / pruned / diverged / unfinished / failed, ``steps_trained`` (every
trial's steps, pruned ones up to their rung) against ``full_sweep_steps`` (the budget times
one full trial's steps: what the sweep costs without pruning), the ``best`` setting (the one
its reruns carry once they exist; before, the best finished trial so far, chosen by the rule
services/study/phases.py applies at the search's end) and ``expected_best_of_k`` for k = 1..N
(Dodge et al. 2019, over the N completed trials' scores: pruned trials have no full-length
score and diverged ones none to trust, so they are left out; with pruning the curve is that
of the trials that survived). That curve treats the trials as independent draws from the
space, which holds for ``random`` and ``quasirandom`` only: for ``grid`` and ``tpe`` it is
None and ``expected_best_note`` says why. ``budget_note`` is set when the searched entries'
budgets differ. ``phase``: ``search`` (trials only), ``reruns`` (the reruns and baselines
are training) or ``complete``.

The summary of a study (``study_summary``): one ``tuned`` row per entry over its reruns (the
best setting on ``rerun_seeds`` fresh seeds shared by every entry: common random numbers),
ranked, paired against the best tuned label seed by seed; after each, its ``one-shot`` row
over the baselines (label ``<label>:one-shot``, the entry's given values on the same seeds),
unranked (``rank`` None) and paired against its own tuned label: what tuning bought, seed by
seed. An entry without a search has no one-shot row (its one trial was its given values).
Test loss/accuracy come from these rows' runs only: trials never read the test split. While
the search runs there are no rows (``optimizers`` empty, ``best`` None) and the block shows
the study so far.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from services.db import metric_queries, store
from services.db.models import BASELINE, FINISHED, RERUN, SUCCEEDED, TRIAL
from services.db.session import unit_of_work
from services.errors import NotFound
from services.spec import JobSpec
from services.study.phases import BASELINE_SUFFIX, sampled_values
from services.study.protocol import best, expected_best_of_k, selection_score
from services.study.sampling import grid_points
from services.summary import RunView, label_rows, paired, rank_rows

TRIAL_STATUSES = ("completed", "pruned", "diverged", "running", "queued", "failed", "cancelled")
TUNED, ONE_SHOT = "tuned", "one-shot"

_NOT_INDEPENDENT = {
    "grid": "grid: the trials are the grid's points in order, not draws from the space, so "
    "the expected best after k random draws does not describe this study",
    "tpe": "tpe: each round is drawn from the earlier trials' results, so the trials are not "
    "independent draws and the expected best after k draws does not apply",
}


class StoredRun(Protocol):
    """What these functions read of a run: a ``Run`` row, or the report's ``RunInfo``
    (read-only members, so that a frozen dataclass fits)."""

    @property
    def id(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def optimizer(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def steps_done(self) -> int: ...
    @property
    def total_steps(self) -> int | None: ...
    @property
    def diverged(self) -> bool: ...
    @property
    def hyperparameters(self) -> dict[str, Any]: ...
    @property
    def role(self) -> str: ...
    @property
    def trial(self) -> int | None: ...
    @property
    def pruned_at_epoch(self) -> int | None: ...
    @property
    def selection_score(self) -> float | None: ...


@dataclass(frozen=True)
class Trial:
    """One row of the trials table (see the module docstring)."""

    run_id: int
    label: str
    optimizer: str
    trial: int
    seed: int
    status: str
    values: dict[str, Any]
    hyperparameters: dict[str, Any]
    selection_score: float | None
    rung: int | None
    steps_trained: int
    total_steps: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def higher_is_better(spec: JobSpec) -> bool:
    """The selection metric's direction (as services/study/phases.py decides it)."""
    return spec.selection_metric.endswith(("accuracy", "r2"))


def selection_column(spec: JobSpec) -> str:
    """The epoch column the selection metric is read from (R² is stored as accuracy)."""
    return spec.selection_metric.replace("_r2", "_accuracy")


def trial_status(run: StoredRun) -> str:
    if run.diverged:
        return "diverged"
    if run.status == SUCCEEDED:
        return "pruned" if run.pruned_at_epoch is not None else "completed"
    return run.status


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def trials(
    spec: JobSpec,
    runs: Sequence[StoredRun],
    epochs: Mapping[int, Mapping[str, Sequence[Any]]],
) -> list[Trial]:
    """The study's trials (see the module docstring); ``epochs``: the epoch series by run id
    (only those of trials without a stored score are read)."""
    entries = {entry.display_label: entry for entry in spec.optimizers}
    order = {label: i for i, label in enumerate(entries)}
    column, higher = selection_column(spec), higher_is_better(spec)
    out = []
    for run in runs:
        if run.role != TRIAL or run.label not in entries:
            continue
        score = run.selection_score
        if score is None:
            score = selection_score(epochs.get(run.id, {}), column, higher)
        out.append(
            Trial(
                run_id=run.id,
                label=run.label,
                optimizer=run.optimizer,
                trial=run.trial or 0,
                seed=run.seed,
                status=trial_status(run),
                values=sampled_values(run, entries[run.label]),  # type: ignore[arg-type]
                hyperparameters=dict(run.hyperparameters),
                selection_score=_finite(score),
                rung=run.pruned_at_epoch,
                steps_trained=run.steps_done,
                total_steps=run.total_steps,
            )
        )
    return sorted(out, key=lambda t: (order[t.label], t.trial, t.run_id))


def budget(spec: JobSpec, entry: Any) -> int:
    """The trials an entry gets: one without a search; a grid at most its points."""
    assert spec.tuning is not None
    if not entry.search:
        return 1
    wanted = spec.tuning.budget(entry.display_label)
    if spec.tuning.sampler == "grid":
        return min(wanted, len(grid_points(entry.search)))
    return wanted


def _phase(runs: Sequence[StoredRun], finished: bool) -> str:
    answer = [run for run in runs if run.role in (RERUN, BASELINE)]
    if answer:
        return "complete" if all(run.status in FINISHED for run in answer) else "reruns"
    return "complete" if finished else "search"


def _best_setting(
    mine: list[Trial], rerun_trial: int | None, higher: bool
) -> dict[str, Any] | None:
    if rerun_trial is not None:
        chosen = next((t for t in mine if t.trial == rerun_trial), None)
    else:
        # a diverged setting is never the answer, however good it looked before it blew up
        done = [t for t in mine if t.status in ("completed", "pruned")]
        chosen = best([(t, t.selection_score) for t in done], higher)
    if chosen is None:
        return None
    return {
        "trial": chosen.trial,
        "run_id": chosen.run_id,
        "values": chosen.values,
        "hyperparameters": chosen.hyperparameters,
        "selection_score": chosen.selection_score,
    }


def study_block(
    spec: JobSpec, runs: Sequence[StoredRun], found: Sequence[Trial], *, finished: bool
) -> dict[str, Any]:
    """The summary's ``study`` block (see the module docstring); ``found``: ``trials()``;
    ``finished``: whether the job has ended."""
    tuning = spec.tuning
    assert tuning is not None
    higher = higher_is_better(spec)
    independent = tuning.sampler not in _NOT_INDEPENDENT
    rerun_trials = {run.label: run.trial for run in runs if run.role == RERUN}
    entries = []
    for entry in spec.optimizers:
        label = entry.display_label
        mine = [t for t in found if t.label == label]
        count = {status: sum(t.status == status for t in mine) for status in TRIAL_STATUSES}
        planned = budget(spec, entry)
        per_trial = max((t.total_steps for t in mine if t.total_steps is not None), default=None)
        completed = [t.selection_score for t in mine if t.status == "completed"]
        scores = [s for s in completed if s is not None]
        entries.append(
            {
                "label": label,
                "optimizer": entry.name,
                "searched": bool(entry.search),
                "budget": planned,
                "trials": len(mine),
                "completed": count["completed"],
                "pruned": count["pruned"],
                "diverged": count["diverged"],
                "unfinished": count["queued"] + count["running"],
                "failed": count["failed"] + count["cancelled"],
                "steps_trained": sum(t.steps_trained for t in mine),
                "full_sweep_steps": None if per_trial is None else planned * per_trial,
                "best": _best_setting(mine, rerun_trials.get(label), higher),
                "expected_best_of_k": (
                    expected_best_of_k(scores, higher) if independent and entry.search else None
                ),
            }
        )
    budgets = {e["label"]: e["budget"] for e in entries if e["searched"]}
    budget_note = None
    if len(set(budgets.values())) > 1:
        budget_note = (
            "trial budgets differ between entries ("
            + ", ".join(f"{label} {n}" for label, n in budgets.items())
            + "): compare the expected best after the same k trials, not the best trials"
        )
    full = [e["full_sweep_steps"] for e in entries]
    return {
        "sampler": tuning.sampler,
        "selection_metric": spec.selection_metric,
        "higher_is_better": higher,
        "phase": _phase(runs, finished),
        "rerun_seeds": spec.rerun_seeds,
        "pruning": tuning.pruning.model_dump() if tuning.pruning else None,
        "budget_note": budget_note,
        "expected_best_note": _NOT_INDEPENDENT.get(tuning.sampler),
        "steps_trained": sum(e["steps_trained"] for e in entries),
        "full_sweep_steps": None if None in full else sum(full),
        "entries": entries,
    }


def study_summary(
    spec: JobSpec,
    views: Sequence[RunView],
    block: dict[str, Any],
    task: str | None = None,
) -> dict[str, Any]:
    """The summary of a study (see the module docstring); ``views``: its runs (only the
    reruns and baselines are read), ``block``: ``study_block()``."""
    target = spec.effective_target
    tuned_entries = [(entry.display_label, entry.name) for entry in spec.optimizers]
    answer = [v for v in views if v.role in (RERUN, BASELINE)]
    rows: list[dict[str, Any]] = []
    best_label = None
    if answer:
        tuned, finals = label_rows(target, tuned_entries, [v for v in answer if v.role == RERUN])
        best_label = rank_rows(tuned, target)
        reference = finals.get(best_label, {}) if best_label is not None else {}
        searched = {entry.display_label for entry in spec.optimizers if entry.search}
        baseline_views = [v for v in answer if v.role == BASELINE]
        with_baseline = spec.tuning is not None and spec.tuning.baseline
        for row in tuned:
            label = row["label"]
            row["role"] = TUNED
            row["paired"] = None
            if best_label is not None and label != best_label:
                row["paired"] = paired(target, finals[label], reference, best_label)
            rows.append(row)
            if not (with_baseline and label in searched):
                continue
            (one_shot,), own = label_rows(
                target, [(label + BASELINE_SUFFIX, row["optimizer"])], baseline_views
            )
            one_shot.update(
                role=ONE_SHOT,
                rank=None,
                paired=paired(target, own[label + BASELINE_SUFFIX], finals[label], label),
            )
            rows.append(one_shot)
    return {
        "task": task or spec.task,
        "target": target.model_dump(),
        "best": best_label,
        "optimizers": rows,
        "study": block,
    }


@dataclass
class TrialListing:
    """A page of a study's trials, and what it is a page of."""

    job_id: uuid.UUID
    selection_metric: str
    higher_is_better: bool
    sampler: str
    searched: dict[str, list[str]]  # label -> its searched keys, in the spec's order
    items: list[Trial]
    total: int


def list_trials(
    job_id: uuid.UUID | str, *, owner: str | None, limit: int | None, offset: int = 0
) -> TrialListing:
    """A page of the owner's study's trials (all from ``offset`` when ``limit`` is None);
    NotFound for another owner's job, one that does not exist, or a job without tuning."""
    with unit_of_work() as session:
        job = store.get_owned_job(session, job_id, owner)
        spec = JobSpec.model_validate(job.spec)
        if spec.tuning is None:
            raise NotFound(
                f"job {job.id} is not a tuning study (its spec has no 'tuning' block), so it "
                f"has no trials; its runs are at GET /v1/jobs/{job.id}"
            )
        unscored = [r.id for r in job.runs if r.role == TRIAL and r.selection_score is None]
        epochs = metric_queries.series(session, unscored, "epoch", fields=[selection_column(spec)])
        found = trials(spec, job.runs, epochs)
        end = None if limit is None else offset + limit
        return TrialListing(
            job_id=job.id,
            selection_metric=spec.selection_metric,
            higher_is_better=higher_is_better(spec),
            sampler=spec.tuning.sampler,
            searched={e.display_label: list(e.search or {}) for e in spec.optimizers},
            items=found[offset:end],
            total=len(found),
        )

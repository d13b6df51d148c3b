"""The runs of a study, phase by phase.

- At submission (``first_runs``): every entry's trials (a searched entry: its sampled
  settings; an entry without a search: one trial at its given values), on the job's seed.
- When every run has finished (``advance``, called under the job's row lock by the part that
  finished the last one, so exactly once): with ``tpe``, the next round of each entry still
  under its budget; once the search is complete, each trial's selection score is stored and
  each entry's best trial is rerun on the job's fresh rerun seeds, beside its one-shot
  baseline (the entry's given values on the same seeds; label ``<label>:one-shot``). The new
  runs are returned, queued, for the caller to train; none means the study is complete.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from services.db import metric_queries
from services.db.models import BASELINE, FINISHED, QUEUED, RERUN, TRIAL, Job, Run
from services.spec import JobSpec
from services.spec.tuning import apply
from services.study import sampling
from services.study.protocol import best, selection_score

BASELINE_SUFFIX = ":one-shot"


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _setting(entry: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The run's stored hyperparameters for the sampled ``values``: the torch keyword
    arguments, and the schedule under ``schedule`` when the search changed it."""
    chosen = apply(entry, values)
    hyperparameters = _jsonable(chosen.hyperparameters())
    if any(key.startswith("schedule.") for key in values):
        hyperparameters["schedule"] = chosen.schedule.model_dump(mode="json")
    return hyperparameters


def _trial(entry: Any, seed: int, number: int, values: dict[str, Any]) -> Run:
    return Run(
        label=entry.display_label,
        optimizer=entry.name,
        hyperparameters=_setting(entry, values),
        seed=seed,
        status=QUEUED,
        role=TRIAL,
        trial=number,
    )


def first_runs(spec: JobSpec) -> list[Run]:
    """The trials drawn at submission (all of them, or the adaptive sampler's first round)."""
    assert spec.tuning is not None
    tuning, seed = spec.tuning, spec.seeds[0]
    runs = []
    for entry in spec.optimizers:
        if not entry.search:
            runs.append(_trial(entry, seed, 0, {}))
            continue
        label = entry.display_label
        count = sampling.first_round(tuning, tuning.budget(label))
        points = sampling.draw(
            entry.search,
            tuning,
            seed=sampling.study_seed(seed, label),
            count=count,
            higher_is_better=_higher(spec),
        )
        runs += [_trial(entry, seed, number, values) for number, values in enumerate(points)]
    return runs


def sampled_values(run: Run, entry: Any) -> dict[str, Any]:
    """The searched keys' values of a stored trial (what the sampler chose)."""
    out = {}
    for key in entry.search or {}:
        head, _, rest = key.partition(".")
        if head == "schedule":
            out[key] = (run.hyperparameters.get("schedule") or {}).get(rest)
        elif head == "groups":  # groups.<index>.<hyperparameter>
            index, _, name = rest.partition(".")
            out[key] = run.hyperparameters["groups"][int(index)][name]
        elif rest:
            out[key] = run.hyperparameters[head][int(rest)]
        else:
            out[key] = run.hyperparameters[head]
    return out


def _higher(spec: JobSpec) -> bool:
    return spec.selection_metric.endswith(("accuracy", "r2"))


def scores(session: Session, spec: JobSpec, trials: list[Run]) -> dict[int, float | None]:
    """Each finished trial's selection score, from its stored epoch series."""
    column = spec.selection_metric.replace("_r2", "_accuracy")
    series = metric_queries.series(session, [r.id for r in trials], "epoch", fields=[column])
    higher = _higher(spec)
    return {run.id: selection_score(series.get(run.id, {}), column, higher) for run in trials}


def advance(session: Session, job: Job) -> list[Run]:
    """The study's next runs once every run has finished (see the module docstring)."""
    spec = JobSpec.model_validate(job.spec)
    if spec.tuning is None or any(run.status not in FINISHED for run in job.runs):
        return []
    if any(run.role in (RERUN, BASELINE) for run in job.runs):
        return []  # the reruns have finished: the study is complete
    trials = [run for run in job.runs if run.role == TRIAL]
    scored = scores(session, spec, trials)
    entries = {entry.display_label: entry for entry in spec.optimizers}
    new: list[Run] = []
    if spec.tuning.sampler == "tpe":
        new = _next_round(spec, entries, trials, scored)
    if not new:
        for run in trials:
            run.selection_score = scored.get(run.id)
        new = _reruns(spec, entries, trials, scored)
    for run in new:
        job.runs.append(run)
    session.flush()
    return new


def _next_round(
    spec: JobSpec, entries: dict[str, Any], trials: list[Run], scored: dict[int, float | None]
) -> list[Run]:
    assert spec.tuning is not None
    out = []
    for label, entry in entries.items():
        if not entry.search:
            continue
        mine = sorted((r for r in trials if r.label == label), key=lambda r: r.trial or 0)
        budget = spec.tuning.budget(label)
        if len(mine) >= budget:
            continue
        count = min(budget - len(mine), sampling.first_round(spec.tuning, budget))
        history = [(sampled_values(r, entry), scored.get(r.id)) for r in mine]
        points = sampling.draw(
            entry.search,
            spec.tuning,
            seed=sampling.study_seed(spec.seeds[0], label),
            count=count,
            history=history,
            higher_is_better=_higher(spec),
        )
        out += [_trial(entry, spec.seeds[0], len(mine) + i, v) for i, v in enumerate(points)]
    return out


def _reruns(
    spec: JobSpec, entries: dict[str, Any], trials: list[Run], scored: dict[int, float | None]
) -> list[Run]:
    assert spec.tuning is not None
    higher = _higher(spec)
    out = []
    for label, entry in entries.items():
        # A diverged trial is never chosen, however good its score before it blew up.
        mine = [r for r in trials if r.label == label and not r.diverged]
        chosen = best([(r, scored.get(r.id)) for r in mine], higher)
        if chosen is None:  # every trial diverged: nothing to rerun, the summary says so
            continue
        for seed in spec.rerun_seeds:
            out.append(
                Run(
                    label=label,
                    optimizer=entry.name,
                    hyperparameters=dict(chosen.hyperparameters),
                    seed=seed,
                    status=QUEUED,
                    role=RERUN,
                    trial=chosen.trial,
                    total_steps=chosen.total_steps,
                )
            )
        if spec.tuning.baseline and entry.search:
            for seed in spec.rerun_seeds:
                out.append(
                    Run(
                        label=f"{label}{BASELINE_SUFFIX}",
                        optimizer=entry.name,
                        hyperparameters=_setting(entry, {}),
                        seed=seed,
                        status=QUEUED,
                        role=BASELINE,
                        total_steps=chosen.total_steps,
                    )
                )
    return out

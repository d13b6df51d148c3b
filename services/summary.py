"""Per-optimizer summary of a job (DESIGN.md "Convergence metrics").

Definitions (per run):

- steps-to-target: the global step at the end of the first epoch whose target metric reached
  the target; epochs-to-target and time-to-target (training seconds, evaluation excluded)
  likewise. A run that never reaches it is *not reached*: it counts in the success rate,
  never as the budget.
- area under the training-loss curve (``auc_train_loss``): the mean of the per-step training
  loss over the run (read from the step series; one ``AVG`` per run in SQL).
- final / best values come from the epoch series (an epoch's train loss is far less noisy
  than one batch's): the last and the best (min loss, max accuracy or R²) stored value.
- ``final_target``: the last value of the job's target metric (``target.metric``).
- ``test_loss``, ``test_accuracy``: the run's loss and score on the test split, measured
  once after its last epoch (``Run.test_loss``, ``Run.test_accuracy``); the score is the
  accuracy for classification and R² for regression (workers/engine/problem.py, like
  ``val_accuracy``). ``None`` where the run was not evaluated: landscapes have no test
  split, and a diverged or unfinished run has no test result.

A run that diverged counts in ``diverged`` and as not reached, and none of its values (final,
best, area under the curve, to-target) enter the statistics: its curve was cut off by an
exploding or non-finite loss. Non-finite stored values are ignored likewise.

Over the seeds of one optimizer label (one row of ``optimizers``, in the spec's order):

- ``stats[metric]`` = ``{"mean", "std", "median", "n"}`` with the sample standard deviation
  (``None`` for fewer than two values); the to-target metrics are over the reached runs only.
- the flat keys are the means of the value metrics and the medians of the to-target metrics.
- ``success_rate`` = reached runs / runs, also written ``target_reached`` = ``"k/n"``.
- ``rank`` (1 = best): by success rate (higher first), then median steps-to-target (lower
  first; none reached last), then the mean final value of the target metric (better first by
  the target's direction; none last). Equal keys share a rank and the next rank skips
  (1, 1, 3). The top-level ``best`` is the first label of rank 1 in the spec's order.
- ``paired``: runs of one seed share initial weights and mini-batches, so each label is
  compared with ``best`` seed by seed on the final value of the target metric: the differences
  (this label minus the reference) over the seeds where both runs have a value (neither
  diverged), their mean and a 95 % t-interval (mean ± t(0.975, n-1) * s / sqrt(n)).
  ``None`` for the reference itself and for fewer than two common seeds.

Schema: ``{"task", "target", "best", "optimizers": [row, ...]}`` where a row holds ``label``,
``optimizer``, ``runs``, ``final_train_loss``, ``best_train_loss``, ``final_val_accuracy``,
``best_val_accuracy`` (R² for regression; ``None`` for landscapes), ``final_distance``
(landscapes), ``final_target``, ``auc_train_loss``, ``steps_to_target``, ``epochs_to_target``,
``seconds_to_target``, ``test_loss``, ``test_accuracy`` (R² for regression; ``None`` when
no run of the label was evaluated on a test split), ``target_reached``, ``success_rate``,
``diverged``, ``rank``, ``stats`` and ``paired`` (``{"reference", "metric", "n", "seeds",
"differences", "mean", "ci95"}``).

A tuning study's summary (a spec with ``tuning``) has the same rows, over its reruns only,
each with a ``role`` (``"tuned"``, or ``"one-shot"`` for its baseline beside it, unranked),
and a ``study`` block: services/study/results.py defines both. A plain job's summary has
neither key (the API's model reads them as None, as in summaries stored before studies).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.db import metric_queries
from services.db.models import FINISHED, RUN_ROLE, Dataset, Job, StepMetric
from services.spec import JobSpec, TargetSpec

# t(0.975, df): the two-sided 95 % quantile of Student's t; 1.96 (the normal's) beyond.
T_975: dict[int, float] = {
    1: 12.7062,
    2: 4.3027,
    3: 3.1824,
    4: 2.7764,
    5: 2.5706,
    6: 2.4469,
    7: 2.3646,
    8: 2.3060,
    9: 2.2622,
    10: 2.2281,
    11: 2.2010,
    12: 2.1788,
    13: 2.1604,
    14: 2.1448,
    15: 2.1314,
    16: 2.1199,
    17: 2.1098,
    18: 2.1009,
    19: 2.0930,
    20: 2.0860,
    21: 2.0796,
    22: 2.0739,
    23: 2.0687,
    24: 2.0639,
    25: 2.0595,
    26: 2.0555,
    27: 2.0518,
    28: 2.0484,
    29: 2.0452,
    30: 2.0423,
    31: 2.0395,
}

# Per-run values summarized over seeds (mean is the flat value) ...
VALUE_METRICS = (
    "final_train_loss",
    "best_train_loss",
    "final_val_accuracy",
    "best_val_accuracy",
    "final_distance",
    "final_target",
    "auc_train_loss",
    "test_loss",
    "test_accuracy",
)
# ... and the to-target ones, over the reached runs (median is the flat value).
TO_TARGET_METRICS = ("steps_to_target", "epochs_to_target", "seconds_to_target")


def t_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (``df >= 1``)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    return T_975.get(df, 1.96)


@dataclass(frozen=True)
class RunView:
    """What the summary needs of a run.

    ``epochs`` is columnar (epoch, step, train_loss, val_accuracy, train_seconds, distance,
    ...), as ``metric_queries.series(..., granularity="epoch")`` returns it;
    ``auc_train_loss`` is the mean per-step training loss (``None``: no steps yet);
    ``test_loss`` and ``test_accuracy`` the run's stored test results (``None``: none);
    ``role`` its part in a tuning study (``Run.role``; a plain job's runs are ``"run"``).
    """

    label: str
    diverged: bool
    epochs: Mapping[str, Sequence[Any]]
    seed: int = 0
    auc_train_loss: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    role: str = RUN_ROLE


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _column(epochs: Mapping[str, Sequence[Any]], name: str) -> list[float]:
    """The finite values of one column, in order."""
    return [v for v in (_finite(x) for x in epochs.get(name, ())) if v is not None]


def _last(values: list[float]) -> float | None:
    return values[-1] if values else None


def _first_reached(target: TargetSpec, epochs: Mapping[str, Sequence[Any]]) -> int | None:
    for index, value in enumerate(epochs.get(target.column, ())):
        number = _finite(value)
        if number is not None and target.reached(number):
            return index
    return None


def _run_values(target: TargetSpec, run: RunView) -> dict[str, float | None]:
    """One run's values (all ``None`` for a diverged run: it enters no statistic)."""
    names = VALUE_METRICS + TO_TARGET_METRICS
    if run.diverged:
        return dict.fromkeys(names)
    train_loss = _column(run.epochs, "train_loss")
    val_accuracy = _column(run.epochs, "val_accuracy")
    values: dict[str, float | None] = {
        "final_train_loss": _last(train_loss),
        "best_train_loss": min(train_loss, default=None),
        "final_val_accuracy": _last(val_accuracy),
        "best_val_accuracy": max(val_accuracy, default=None),
        "final_distance": _last(_column(run.epochs, "distance")),
        "final_target": _last(_column(run.epochs, target.column)),
        "auc_train_loss": _finite(run.auc_train_loss),
        "test_loss": _finite(run.test_loss),
        "test_accuracy": _finite(run.test_accuracy),
    }
    hit = _first_reached(target, run.epochs)
    for name, column in zip(TO_TARGET_METRICS, ("step", "epoch", "train_seconds"), strict=True):
        values[name] = None if hit is None else _finite(run.epochs[column][hit])
    return values


def describe(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, sample std (``None`` below two values), median and count of the given values."""
    kept = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(kept) if kept else None,
        "std": statistics.stdev(kept) if len(kept) > 1 else None,
        "median": statistics.median(kept) if kept else None,
        "n": len(kept),
    }


def paired_difference(differences: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """Mean of paired differences and its 95 % t-interval (at least two differences)."""
    n = len(differences)
    if n < 2:
        raise ValueError("a paired interval needs at least two differences")
    mean = statistics.fmean(differences)
    half = t_975(n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, (mean - half, mean + half)


def _rank_key(row: Mapping[str, Any], higher_is_better: bool) -> tuple[Any, ...]:
    steps = row["steps_to_target"]
    final = row["final_target"]
    signed = 0.0 if final is None else (-final if higher_is_better else final)
    return (-(row["success_rate"] or 0.0), steps is None, steps or 0.0, final is None, signed)


def _ranks(keys: list[tuple[Any, ...]]) -> list[int]:
    """Competition ranks (1 = smallest key; ties share, the next rank skips)."""
    return [1 + sum(other < key for other in keys) for key in keys]


def label_rows(
    target: TargetSpec, entries: Sequence[tuple[str, str]], runs: Sequence[RunView]
) -> tuple[list[dict[str, Any]], dict[str, dict[int, float]]]:
    """One unranked row per ``(label, optimizer)`` entry over its runs, in the given order,
    and each label's final target value by seed (what the paired differences compare)."""
    by_label: dict[str, list[RunView]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    rows: list[dict[str, Any]] = []
    finals_by_seed: dict[str, dict[int, float]] = {}
    for label, optimizer in entries:
        group = by_label.get(label, [])
        per_run = [_run_values(target, run) for run in group]
        finals = finals_by_seed[label] = {}
        for run, values in zip(group, per_run, strict=True):
            final = values["final_target"]
            if final is not None:
                finals[run.seed] = final
        stats = {name: describe(v[name] for v in per_run) for name in VALUE_METRICS}
        stats.update({name: describe(v[name] for v in per_run) for name in TO_TARGET_METRICS})
        reached = stats["steps_to_target"]["n"]
        row: dict[str, Any] = {"label": label, "optimizer": optimizer, "runs": len(group)}
        row.update({name: stats[name]["mean"] for name in VALUE_METRICS})
        row.update({name: stats[name]["median"] for name in TO_TARGET_METRICS})
        row.update(
            target_reached=f"{reached}/{len(group)}",
            success_rate=reached / len(group) if group else None,
            diverged=sum(run.diverged for run in group),
            stats=stats,
        )
        rows.append(row)
    return rows, finals_by_seed


def rank_rows(rows: list[dict[str, Any]], target: TargetSpec) -> str | None:
    """Set each row's ``rank``; returns the best label (the first of rank 1), or None."""
    keys = [_rank_key(row, target.higher_is_better) for row in rows]
    for row, rank in zip(rows, _ranks(keys), strict=True):
        row["rank"] = rank
    return next((row["label"] for row in rows if row["rank"] == 1), None)


def paired(
    target: TargetSpec, own: Mapping[int, float], reference: Mapping[int, float], name: str
) -> dict[str, Any] | None:
    """``own`` minus ``reference`` (the label ``name``) seed by seed, or None below two
    common seeds."""
    seeds = sorted(set(own) & set(reference))
    if len(seeds) < 2:
        return None
    differences = [own[seed] - reference[seed] for seed in seeds]
    mean, (low, high) = paired_difference(differences)
    return {
        "reference": name,
        "metric": target.metric,
        "n": len(seeds),
        "seeds": seeds,
        "differences": differences,
        "mean": mean,
        "ci95": [low, high],
    }


def summarize(spec: JobSpec, runs: Sequence[RunView], task: str | None = None) -> dict[str, Any]:
    """The summary of a job's runs (pure: no database). See the module docstring.

    ``task`` overrides the spec's (an upload's task is stored with the data set)."""
    target = spec.effective_target
    entries = [(entry.display_label, entry.name) for entry in spec.optimizers]
    rows, finals_by_seed = label_rows(target, entries, runs)
    best = rank_rows(rows, target)
    reference = finals_by_seed.get(best, {}) if best is not None else {}
    for row in rows:
        row["paired"] = None
        if best is not None and row["label"] != best:
            row["paired"] = paired(target, finals_by_seed[row["label"]], reference, best)
    return {
        "task": task or spec.task,
        "target": target.model_dump(),
        "best": best,
        "optimizers": rows,
    }


def mean_step_losses(session: Session, run_ids: Iterable[int]) -> dict[int, float]:
    """Mean per-step training loss of each run (the area under its loss curve), in SQL."""
    ids = list(run_ids)
    if not ids:
        return {}
    query = (
        select(StepMetric.run_id, func.avg(StepMetric.loss))
        .where(StepMetric.run_id.in_(ids))
        .group_by(StepMetric.run_id)
    )
    return {int(run_id): float(mean) for run_id, mean in session.execute(query) if mean is not None}


def job_summary(session: Session, job: Job) -> dict[str, Any]:
    """Summarize a job from its stored metrics (finished or still running); a tuning
    study's summary is services/study/results.py's (ranked on its reruns)."""
    run_ids = [run.id for run in job.runs]
    epochs = metric_queries.series(session, run_ids, granularity="epoch")
    auc = mean_step_losses(session, run_ids)
    views = [
        RunView(
            run.label,
            run.diverged,
            epochs[run.id],
            run.seed,
            auc.get(run.id),
            run.test_loss,
            run.test_accuracy,
            run.role,
        )
        for run in job.runs
    ]
    spec = JobSpec.model_validate(job.spec)
    task = None
    if spec.dataset.name == "upload":  # type: ignore[attr-defined]
        dataset = session.get(Dataset, spec.dataset.id)  # type: ignore[attr-defined]
        task = dataset.task if dataset else None
    if spec.tuning is not None:
        # Imported here: results.py builds on this module's rows, ranks and pairs.
        from services.study import results

        found = results.trials(spec, job.runs, epochs)
        block = results.study_block(spec, job.runs, found, finished=job.status in FINISHED)
        return results.study_summary(spec, views, block, task)
    return summarize(spec, views, task)


def current_summary(session: Session, job: Job) -> dict[str, Any]:
    """The summary stored when the job ended, or computed now from its metrics (running)."""
    if job.status in FINISHED and job.summary is not None:
        return with_defaults(job.summary)
    return job_summary(session, job)


def with_defaults(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A stored summary with the metrics added since it was stored (``test_loss`` and
    ``test_accuracy`` in jobs that ended before them) as ``None``, and their ``stats`` as
    over no values: every summary has every key, whenever its job ended."""
    rows = []
    for stored in summary.get("optimizers", []):
        row = dict(stored)
        stats = dict(row.get("stats") or {})
        for name in VALUE_METRICS + TO_TARGET_METRICS:
            row.setdefault(name, None)
            stats.setdefault(name, describe([]))
        rows.append({**row, "stats": stats})
    return {**summary, "optimizers": rows}

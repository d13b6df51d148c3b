"""The ``study`` block of the chart data (services/report/chart_data.py) for a tuning study:
what the tuneability plots, the expected-best-after-k curves and the study's progress line
draw (services/web/js/charts.js, series.js).

    {"sampler", "metric", "column", "higher_is_better",
     "phase": "search" | "reruns",          # reruns: the search is over, its best are rerun
     "progress": {"budget", "trials", "done", "completed", "pruned", "diverged", "failed",
                  "reruns", "reruns_done"},
     "axes": {key: {"scale": "log" | "linear" | "category", "categories": [...] | null}},
     "entries": [{"label", "optimizer", "budget",
                  "search": {key: {"kind", "bounds"}},     # bounds: as the spec writes them
                  "trials": [{"run_id", "trial", "status", "pruned_at_epoch", "score",
                              "values": {key: value}}],
                  "best_trial": int | null, "best_final": bool,
                  "expected_best": [float, ...] | null}],
     "expected_best_note": str | null}     # why there are no expected-best curves

Decisions:
- A trial's ``status`` is ``completed``, ``pruned`` (stopped at the rung ``pruned_at_epoch``),
  ``diverged`` (wins over pruned), or the run's own status while it is not done (``queued``,
  ``running``) or when it did not finish (``failed``, ``cancelled``).
- ``score``: the stored ``selection_score`` (set on every trial when the search ends), else
  computed from the epoch series so far (protocol.selection_score), so the plots fill in
  while the study runs. A pruned trial's score is over the epochs it trained.
- ``best_trial``: the trial the reruns carry once they exist (``best_final`` true), else the
  best score so far among the finished trials (what would be rerun if the search ended now).
- ``expected_best`` (protocol.expected_best_of_k, k = 1..N) is over the entry's *completed*
  trials only: a pruned trial's score is from fewer epochs and a diverged one's is no
  result, so neither is a draw of "train with this setting". Only for the random and
  quasirandom samplers, whose trials are independent draws from the space; the grid is
  not a draw and TPE's trials depend on the earlier ones' scores (``expected_best_note``).
- Axes: a key searched log-uniformly by any entry is drawn on a log axis; a numeric
  choice or grid spanning two decades or more as well; booleans and strings are
  categories, in the order the spaces list them.
"""

from __future__ import annotations

import math
from typing import Any, cast

from services.db.models import BASELINE, FINISHED, RERUN, TRIAL, Run
from services.report.data import ReportData, RunInfo
from services.spec import JobSpec
from services.study.phases import sampled_values
from services.study.protocol import best, expected_best_of_k, selection_score

# A trial that trained to its end, or to its rung: it has a result to plot.
FINISHED_TRIAL = ("completed", "pruned", "diverged")
EXPECTED_BEST_SAMPLERS = ("random", "quasirandom")
WHY_NO_EXPECTED_BEST: dict[str, str] = {
    "grid": "the grid sampler tries every listed setting once, so its trials are not random "
    "draws: the expected best after k draws does not apply",
    "tpe": "TPE picks each round's trials from the earlier rounds' scores, so its trials are "
    "not independent draws from the space: the expected best after k draws does not apply",
}


def trial_status(run: RunInfo) -> str:
    if run.status != "succeeded":
        return run.status
    if run.diverged:
        return "diverged"
    return "pruned" if run.pruned_at_epoch is not None else "completed"


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _axes(spec: JobSpec) -> dict[str, dict[str, Any]]:
    kinds: dict[str, list[Any]] = {}
    for entry in spec.optimizers:
        for key, distribution in (entry.search or {}).items():
            kinds.setdefault(key, []).append(distribution)
    out: dict[str, dict[str, Any]] = {}
    for key, distributions in kinds.items():
        listed = [v for d in distributions if d.kind in ("choice", "grid") for v in d.values]
        if any(not _numeric(v) for v in listed):
            categories: list[Any] = []
            for value in listed:  # by type too: True == 1 in Python, not in the browser
                if not any(type(c) is type(value) and c == value for c in categories):
                    categories.append(value)
            out[key] = {"scale": "category", "categories": categories}
            continue
        ends = [v for d in distributions for v in d.values]
        wide = all(v > 0 for v in ends) and max(ends) >= 100 * min(ends)
        log = any(d.kind == "log_uniform" for d in distributions) or (
            bool(listed) and wide and all(d.kind in ("choice", "grid") for d in distributions)
        )
        out[key] = {"scale": "log" if log else "linear", "categories": None}
    return out


def study_block(data: ReportData, spec: JobSpec) -> dict[str, Any]:
    """The study block (the module docstring) for a job whose spec has ``tuning``."""
    tuning = spec.tuning
    assert tuning is not None
    metric = spec.selection_metric
    column = metric.replace("_r2", "_accuracy")
    higher = metric.endswith(("accuracy", "r2"))
    trials = [run for run in data.runs if run.role == TRIAL]
    finals = [run for run in data.runs if run.role in (RERUN, BASELINE)]
    entries = []
    for entry in spec.optimizers:
        label = entry.display_label
        mine = sorted((r for r in trials if r.label == label), key=lambda r: r.trial or 0)
        scored: list[tuple[RunInfo, str, float | None]] = []
        for run in mine:
            score = run.selection_score
            if score is None:
                score = selection_score(data.epochs.get(run.id) or {}, column, higher)
            finite = score is not None and math.isfinite(score)
            scored.append((run, trial_status(run), score if finite else None))
        rerun = next((r for r in finals if r.role == RERUN and r.label == label), None)
        if rerun is not None:
            best_trial = rerun.trial
        else:
            done = [(run.trial, score) for run, status, score in scored if status in FINISHED_TRIAL]
            best_trial = best(done, higher)
        completed = [s for _, status, s in scored if status == "completed" and s is not None]
        curve = (
            expected_best_of_k(completed, higher)
            if tuning.sampler in EXPECTED_BEST_SAMPLERS and entry.search and completed
            else None
        )
        rows = [
            {
                "run_id": str(run.id),
                "trial": run.trial,
                "status": status,
                "pruned_at_epoch": run.pruned_at_epoch,
                "score": score,
                # sampled_values reads only the stored hyperparameters, which RunInfo keeps
                "values": sampled_values(cast(Run, run), entry) if entry.search else {},
            }
            for run, status, score in scored
        ]
        entries.append(
            {
                "label": label,
                "optimizer": entry.name,
                "budget": tuning.budget(label) if entry.search else 1,
                "search": {
                    key: {"kind": d.kind, "bounds": d.values}
                    for key, d in (entry.search or {}).items()
                },
                "trials": rows,
                "best_trial": best_trial,
                "best_final": rerun is not None,
                "expected_best": curve,
            }
        )
    statuses = [trial_status(run) for run in trials]
    return {
        "sampler": tuning.sampler,
        "metric": metric,
        "column": column,
        "higher_is_better": higher,
        "phase": "reruns" if finals else "search",
        "progress": {
            "budget": sum(e["budget"] for e in entries),
            "trials": len(trials),
            "done": sum(s in FINISHED_TRIAL for s in statuses),
            "completed": statuses.count("completed"),
            "pruned": statuses.count("pruned"),
            "diverged": statuses.count("diverged"),
            "failed": statuses.count("failed") + statuses.count("cancelled"),
            "reruns": len(finals),
            "reruns_done": sum(run.status in FINISHED for run in finals),
        },
        "axes": _axes(spec),
        "entries": entries,
        "expected_best_note": WHY_NO_EXPECTED_BEST.get(tuning.sampler),
    }

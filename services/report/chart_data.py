"""The data every chart draws from, for the web page (``GET /v1/jobs/{id}/charts``) and the
HTML report (embedded as JSON): one shape, so both views draw the same picture of a job.

    {"job_id", "status", "finished", "task", "smoothing", "max_points",
     "labels": [{"label", "optimizer", "seeds", "baseline_of"}],   # the spec's order
     "runs": [{"id", "label", "seed", "status", "diverged",
               "role", "trial", "pruned_at_epoch", "selection_score"}],
     "steps": {run_id: {"step", "epoch", "train_seconds", "loss", "accuracy"[, "x", "y"]}},
     "epochs": {run_id: {"epoch", "step", "train_seconds", "train_loss", "val_loss",
                         "val_accuracy", "distance"}},
     "bucket": 1,                                          # steps per step point (see below)
     "target": {"metric", "column", "value", "higher_is_better", "text"} | null,
     "bars": [{"label", "steps_to_target", "seconds_to_target", "target_reached",
               "diverged"}],                               # the summary's rows
     "landscape": {"name", "x_range", "y_range", "minima", "levels": [{"value", "lines"}]}
                  | null,
     "study": {...} | null}                                # services/report/study_data.py

A tuning study (the spec has ``tuning``): ``runs`` lists every run with its role (trial,
rerun, baseline); ``steps`` and ``epochs`` hold only the reruns' and baselines' (the final
answer the loss and accuracy charts draw: a study's many trials would bury it, and they are
drawn by their scores in ``study``); ``seeds`` counts those runs; a baseline label
(``<label>:one-shot``) follows its tuned label and names it in ``baseline_of`` (null
otherwise).

Step series: ``epoch`` is fractional (epoch e's i-th of n steps is ``e - 1 + i / n``), so
step charts can be drawn against epochs; ``train_seconds`` is the run's cumulative training
time. A run of more than ``max_points`` steps is averaged into buckets of ``bucket`` steps
(the job's longest run / ``max_points``, rounded up), on the same edges in every such run
(``step`` is each bucket's last step, every other field the mean over the bucket's steps), so
the seeds of a label still line up and their mean and band are taken point by point; a
shorter run (gd's one step per epoch) keeps its own points. The charts' smoothing is defined
per step (``services/web/js/series.js``), so raw and bucketed series smooth alike. Epoch
series are never bucketed. Non-finite values are null.

Landscapes: the function is evaluated on a 160 x 160 grid over the view box (the default box
grown to show every path), and contourpy traces 14 levels of log(f - min f + δ), evenly
spaced: the lines only, in data coordinates; the browser draws them and the paths.
"""

from __future__ import annotations

import math
from typing import Any, cast

import contourpy
import numpy as np

from services.db.models import FINISHED, TRIAL
from services.report.data import ReportData, RunInfo
from services.report.format import _target_text
from services.report.landscapes import LANDSCAPES, _view_box
from services.report.study_data import study_block
from services.spec import JobSpec
from services.study.phases import BASELINE_SUFFIX as SUFFIX

MAX_POINTS = 1000
GRID = 160
LEVELS = 14
_STEP_FIELDS = ("train_seconds", "loss", "accuracy")
_EPOCH_FIELDS = ("epoch", "step", "train_seconds", "train_loss", "val_loss", "val_accuracy")


def _floats(values: Any) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _listed(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values.tolist()]


def _fractional_epochs(epochs: np.ndarray) -> np.ndarray:
    """Epoch e's i-th step (1-based) of n: e - 1 + i / n (steps in order)."""
    out = np.empty_like(epochs)
    if epochs.size == 0:
        return out
    edges = np.flatnonzero(np.diff(epochs)) + 1
    for block in np.split(np.arange(epochs.size), edges):
        n = block.size
        out[block] = epochs[block] - 1 + np.arange(1, n + 1) / n
    return out


def _bucketed(columns: dict[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
    """Mean per bucket of ``width`` steps (``step``: the bucket's last step)."""
    steps = columns["step"]
    if width <= 1 or steps.size == 0:
        return columns
    keys = (steps.astype(np.int64) - 1) // width
    edges = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate(([0], edges))
    out = {"step": np.maximum.reduceat(steps, starts)}
    counts = np.diff(np.concatenate((starts, [steps.size])))
    for name, values in columns.items():
        if name == "step":
            continue
        finite = np.isfinite(values)
        sums = np.add.reduceat(np.where(finite, values, 0.0), starts)
        seen = np.add.reduceat(finite.astype(np.int64), starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(seen > 0, sums / np.maximum(seen, 1), np.nan)
    assert out["step"].size == counts.size
    return out


def _step_series(
    data: ReportData, runs: list[RunInfo], landscape: bool, max_points: int
) -> tuple[dict[str, dict[str, list[Any]]], int]:
    fields = _STEP_FIELDS + (("x", "y") if landscape else ())
    raw: dict[int, dict[str, np.ndarray]] = {}
    for run in runs:
        stored = data.steps.get(run.id) or {}
        columns = {"step": _floats(stored.get("step", []))}
        columns["epoch"] = _fractional_epochs(_floats(stored.get("epoch", [])))
        for name in fields:
            columns[name] = _floats(stored.get(name, [None] * columns["step"].size))
        raw[run.id] = columns
    longest = max((float(np.nanmax(c["step"])) for c in raw.values() if c["step"].size), default=0)
    width = max(1, math.ceil(longest / max_points))
    out = {}
    for run_id, columns in raw.items():
        kept = columns if columns["step"].size <= max_points else _bucketed(columns, width)
        listed = {name: _listed(values) for name, values in kept.items()}
        listed["step"] = [int(v) for v in kept["step"].tolist()]
        out[str(run_id)] = listed
    return out, width


def _epoch_series(data: ReportData, runs: list[RunInfo]) -> dict[str, dict[str, list[Any]]]:
    out = {}
    for run in runs:
        stored = data.epochs.get(run.id) or {}
        n = len(stored.get("epoch", []))
        series = {
            name: _listed(_floats(stored.get(name, [None] * n)))
            for name in (*_EPOCH_FIELDS, "distance")
        }
        for key in ("epoch", "step"):
            series[key] = [None if v is None else int(v) for v in series[key]]
        out[str(run.id)] = series
    return out


def _target(summary: dict[str, Any]) -> dict[str, Any] | None:
    target = summary.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("value"), int | float):
        return None
    metric = str(target.get("metric", ""))
    return {
        "metric": metric,
        "column": metric.replace("_r2", "_accuracy"),
        "value": float(target["value"]),
        "higher_is_better": metric.endswith(("accuracy", "r2")),
        "text": _target_text(target),
    }


def contour_levels(
    function: Any, x_range: tuple[float, float], y_range: tuple[float, float]
) -> list[dict[str, Any]]:
    """Iso-lines of log(f - min f + δ) at ``LEVELS`` evenly spaced values, as
    ``[{"value": f at the level, "lines": [[[x, y], ...], ...]}]``."""
    xs = np.linspace(*x_range, GRID)
    ys = np.linspace(*y_range, GRID)
    gx, gy = np.meshgrid(xs, ys)
    with np.errstate(all="ignore"):
        z = np.asarray(function(gx, gy), dtype=np.float64)
    finite = np.isfinite(z)
    if not finite.any():
        return []
    lo, hi = float(z[finite].min()), float(z[finite].max())
    delta = max((hi - lo) * 1e-4, 1e-12)
    shade = np.where(finite, np.log10(np.where(finite, z, lo) - lo + delta), np.nan)
    generator = contourpy.contour_generator(gx, gy, shade, line_type=contourpy.LineType.Separate)
    s_lo, s_hi = float(np.nanmin(shade)), float(np.nanmax(shade))
    levels = []
    for level in np.linspace(s_lo, s_hi, LEVELS + 2)[1:-1]:
        traced = cast(list[np.ndarray], generator.lines(level))  # LineType.Separate: (n, 2) each
        lines = [np.round(line, 5).tolist() for line in traced if len(line) > 1]
        if lines:
            levels.append({"value": lo - delta + 10 ** float(level), "lines": lines})
    return levels


def _landscape(data: ReportData, steps: dict[str, dict[str, list[Any]]]) -> dict[str, Any] | None:
    dataset = data.spec.get("dataset") or {}
    name = str(dataset.get("name"))
    if name not in LANDSCAPES:
        return None
    params = {"condition": dataset["condition"]} if "condition" in dataset else {}
    view = LANDSCAPES[name](**params)
    xs = [v for s in steps.values() for v in s.get("x", []) if v is not None]
    ys = [v for s in steps.values() for v in s.get("y", []) if v is not None]
    start = list(dataset.get("start") or [])
    x_range = _view_box(view.x_range, [*xs, *(m[0] for m in view.minima), *start[:1]])
    y_range = _view_box(view.y_range, [*ys, *(m[1] for m in view.minima), *start[1:2]])
    return {
        "name": name,
        "x_range": list(x_range),
        "y_range": list(y_range),
        "minima": [list(m) for m in view.minima],
        "levels": contour_levels(view.function, x_range, y_range),
    }


def _labels(spec: JobSpec | None, data: ReportData, charted: list[RunInfo]) -> list[dict[str, Any]]:
    """The spec's labels in order, each study baseline (``<label>:one-shot``) right after its
    tuned label, then any other label the runs have; ``seeds``: the charted runs'."""
    order = [entry.display_label for entry in spec.optimizers] if spec else []
    baselines = {r.label: base for r in data.runs for base in order if r.label == base + SUFFIX}
    labels = []
    for label in order:
        labels.append(label)
        labels += [b for b, base in baselines.items() if base == label and b not in labels]
    for run in data.runs:
        if run.label not in labels:
            labels.append(run.label)
    return [
        {
            "label": label,
            "optimizer": next((r.optimizer for r in data.runs if r.label == label), label),
            "seeds": sum(1 for r in charted if r.label == label),
            "baseline_of": baselines.get(label),
        }
        for label in labels
    ]


def chart_data(data: ReportData, *, smoothing: float, max_points: int = MAX_POINTS) -> dict:
    """The charts' data for one loaded job (the shape in the module docstring)."""
    try:
        spec: JobSpec | None = JobSpec.model_validate(data.spec)
    except ValueError:  # a spec stored by an older version: still draw what there is
        spec = None
    task = str(data.summary.get("task") or (spec.task if spec else "classification"))
    study = spec is not None and spec.tuning is not None
    # A study's series charts draw its final answer (reruns and baselines); its trials are
    # drawn by score in the study block, so their steps and epochs are not sent.
    charted = [run for run in data.runs if not (study and run.role == TRIAL)]
    steps, width = _step_series(data, charted, task == "landscape", max_points)
    rows = [r for r in data.summary.get("optimizers") or [] if isinstance(r, dict)]
    return {
        "job_id": data.job_id,
        "status": data.status,
        "finished": data.status in FINISHED,
        "task": task,
        "smoothing": 0.0 if task == "landscape" else smoothing,
        "max_points": max_points,
        "bucket": width,
        "labels": _labels(spec, data, charted),
        "runs": [
            {
                "id": str(run.id),
                "label": run.label,
                "seed": run.seed,
                "status": run.status,
                "diverged": run.diverged,
                "role": run.role,
                "trial": run.trial,
                "pruned_at_epoch": run.pruned_at_epoch,
                "selection_score": run.selection_score,
            }
            for run in data.runs
        ],
        "steps": steps,
        "epochs": _epoch_series(data, charted),
        "target": _target(data.summary),
        "bars": [
            {
                key: row.get(key)
                for key in (
                    "label",
                    "steps_to_target",
                    "seconds_to_target",
                    "target_reached",
                    "diverged",
                )
            }
            for row in rows
        ],
        "landscape": _landscape(data, steps) if task == "landscape" else None,
        "study": study_block(data, spec) if spec is not None and spec.tuning is not None else None,
    }

"""The HTML report of one job: one self-contained page (inline CSS and SVG, no script, no
network reference), served by ``GET /v1/jobs/{id}/report`` and written by ``optbench report``.

    from services.report import render_report
    html = render_report(job_id)                      # job_id: UUID or its string
    Path("report.html").write_text(html, encoding="utf-8")

``render_report(job_id, *, smoothing=0.9, max_points=1000) -> str`` raises
``services.errors.NotFound`` for an unknown job. It reads the job, its runs, its step and
epoch series and its summary (the stored one once the job finished, recomputed otherwise, so
a running job gets a partial report) in one transaction, and shows:

- the summary table (every column the summary has; ``stats`` as mean ± std, ``paired`` and
  unknown fields as JSON), the target, the status (and the error of a failed job);
- training loss per step: log scale when every value is positive, smoothed per run with a
  debiased exponential moving average (``smoothing``, stated on the page; landscapes are
  exact function values and stay unsmoothed), the line the mean over seeds and the band
  their min-max;
- validation accuracy (R² for regression) per epoch, mean over seeds with a min-max band;
- steps-to-target and time-to-target bars (median over the seeds that reached it, the
  share that did; "not reached" otherwise);
- landscapes: every run's trajectory over the function's contour plot (the lecture's
  picture), and the distance to the nearest minimum per step;
- the runs, the spec (pretty JSON) and the environment: the job's device, the optbench
  version, and the summary's ``environment`` (e.g. the worker's torch version) when a
  worker recorded one.

The API process must not import torch, so the six landscape functions are re-implemented
here in numpy (``LANDSCAPES``); a unit test keeps them equal to workers/engine/landscapes.py.
"""

from __future__ import annotations

import json
import math
import statistics
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np

from services import plots
from services.db import metric_queries, store
from services.db.models import FINISHED
from services.db.session import unit_of_work
from services.plots import esc
from services.spec import JobSpec
from services.summary import job_summary

DEFAULT_SMOOTHING = 0.9
MAX_POINTS = plots.MAX_POINTS

# ---------------------------------------------------------------- landscapes in numpy

Function2D = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LandscapeView:
    """A 2-D function, its minima and the box it is usually drawn in."""

    function: Function2D
    minima: tuple[tuple[float, float], ...]
    x_range: tuple[float, float]
    y_range: tuple[float, float]


def _beale(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _rastrigin(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 20 + (x**2 - 10 * np.cos(2 * np.pi * x)) + (y**2 - 10 * np.cos(2 * np.pi * y))


def _quadratic(condition: float = 25.0) -> Function2D:
    return lambda x, y: 0.5 * (x**2 + condition * y**2)


_HIMMELBLAU_MINIMA = (
    (3.0, 2.0),
    (-2.805118, 3.131312),
    (-3.779310, -3.283186),
    (3.584428, -1.848126),
)
LANDSCAPES: dict[str, Callable[..., LandscapeView]] = {
    "rosenbrock": lambda: LandscapeView(
        lambda x, y: (1 - x) ** 2 + 100 * (y - x**2) ** 2, ((1.0, 1.0),), (-2.0, 2.0), (-1.0, 3.0)
    ),
    "beale": lambda: LandscapeView(_beale, ((3.0, 0.5),), (-4.5, 4.5), (-4.5, 4.5)),
    "himmelblau": lambda: LandscapeView(
        lambda x, y: (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2,
        _HIMMELBLAU_MINIMA,
        (-5.0, 5.0),
        (-5.0, 5.0),
    ),
    "rastrigin": lambda: LandscapeView(_rastrigin, ((0.0, 0.0),), (-5.12, 5.12), (-5.12, 5.12)),
    "saddle": lambda: LandscapeView(lambda x, y: x**2 - y**2, (), (-2.0, 2.0), (-2.0, 2.0)),
    "quadratic": lambda condition=25.0: LandscapeView(
        _quadratic(condition), ((0.0, 0.0),), (-5.0, 5.0), (-3.0, 3.0)
    ),
}


def _view_box(default: tuple[float, float], values: Sequence[float]) -> tuple[float, float]:
    """The default box grown to show the points, but never more than one span each way."""
    lo, hi = default
    span = hi - lo
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        lo = max(min(lo, min(finite)), default[0] - span)
        hi = min(max(hi, max(finite)), default[1] + span)
    pad = (hi - lo) * 0.03 if (lo, hi) != default else 0.0
    return lo - pad, hi + pad


# ---------------------------------------------------------------- series helpers


def ema(values: Sequence[float | None], smoothing: float) -> list[float | None]:
    """Debiased exponential moving average (TensorBoard's): a missing value stays missing and
    does not move the average."""
    if smoothing <= 0:
        return list(values)
    out: list[float | None] = []
    average, weight = 0.0, 0.0
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(None)
            continue
        average = smoothing * average + (1 - smoothing) * value
        weight = smoothing * weight + (1 - smoothing)
        out.append(average / weight)
    return out


@dataclass
class OverSeeds:
    x: list[float] = field(default_factory=list)
    mean: list[float | None] = field(default_factory=list)
    low: list[float | None] = field(default_factory=list)
    high: list[float | None] = field(default_factory=list)
    seeds: int = 0


def over_seeds(curves: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> OverSeeds:
    """Mean and min-max over runs at each x (a run that stopped early just stops counting)."""
    by_x: dict[float, list[float]] = {}
    for xs, ys in curves:
        for x, y in zip(xs, ys, strict=True):
            if x is not None and y is not None and math.isfinite(y):
                by_x.setdefault(x, []).append(y)
    out = OverSeeds(seeds=sum(1 for _, ys in curves if any(v is not None for v in ys)))
    for x in sorted(by_x):
        values = by_x[x]
        out.x.append(x)
        out.mean.append(statistics.fmean(values))
        out.low.append(min(values))
        out.high.append(max(values))
    return out


def _all_positive(groups: Sequence[OverSeeds]) -> bool:
    values = [v for g in groups for v in g.low if v is not None]
    return bool(values) and min(values) > 0


# ---------------------------------------------------------------- the data a page needs


@dataclass(frozen=True)
class RunInfo:
    id: int
    label: str
    optimizer: str
    seed: int
    status: str
    steps_done: int
    total_steps: int | None
    diverged: bool
    diverged_at_step: int | None
    test_loss: float | None
    test_accuracy: float | None
    hyperparameters: dict[str, Any]


@dataclass(frozen=True)
class ReportData:
    job_id: str
    name: str
    status: str
    error: str | None
    device: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict[str, Any]
    summary: dict[str, Any]
    runs: list[RunInfo]
    steps: dict[int, dict[str, list[Any]]]
    epochs: dict[int, dict[str, list[Any]]]


def load(job_id: uuid.UUID | str) -> ReportData:
    """Everything the page shows, read in one transaction (NotFound for an unknown job)."""
    with unit_of_work() as session:
        job = store.get_job(session, job_id)
        ids = [run.id for run in job.runs]
        summary = (
            job.summary
            if job.status in FINISHED and job.summary is not None
            else job_summary(session, job)
        )
        return ReportData(
            job_id=str(job.id),
            name=job.name,
            status=job.status,
            error=job.error,
            device=job.device,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            spec=dict(job.spec),
            summary=dict(summary),
            runs=[
                RunInfo(
                    run.id,
                    run.label,
                    run.optimizer,
                    run.seed,
                    run.status,
                    run.steps_done,
                    run.total_steps,
                    run.diverged,
                    run.diverged_at_step,
                    run.test_loss,
                    run.test_accuracy,
                    dict(run.hyperparameters or {}),
                )
                for run in job.runs
            ],
            steps=metric_queries.series(session, ids, "step"),
            epochs=metric_queries.series(session, ids, "epoch"),
        )


def render_report(
    job_id: uuid.UUID | str,
    *,
    smoothing: float = DEFAULT_SMOOTHING,
    max_points: int = MAX_POINTS,
) -> str:
    """The job's report: one self-contained HTML page (see the module docstring)."""
    return build_page(load(job_id), smoothing=smoothing, max_points=max_points)


# ---------------------------------------------------------------- formatting


def _num(value: Any, kind: str = "g") -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return esc(value)
    if not math.isfinite(value):
        return esc(value)
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "int":
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    if kind == "s":
        return f"{value:.3g} s"
    if kind == "r2":
        return f"{value:.4f}"
    if kind == "g2":
        return f"{value:.2g}"
    return f"{value:.4g}"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "&ndash;"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


def _version() -> str:
    try:
        return metadata.version("optbench")
    except metadata.PackageNotFoundError:
        return "unknown"


# Summary columns in display order: key → (header, number format). Headers may depend on the
# task (R² for regression), see _columns.
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("rank", "rank", "int"),
    ("label", "label", "text"),
    ("optimizer", "optimizer", "text"),
    ("runs", "runs", "int"),
    ("final_train_loss", "final train loss", "g"),
    ("best_val_accuracy", "best val accuracy", "pct"),
    ("final_distance", "final distance", "g"),
    ("steps_to_target", "steps to target", "int"),
    ("epochs_to_target", "epochs to target", "int"),
    ("seconds_to_target", "time to target", "s"),
    ("target_reached", "reached", "text"),
    ("auc_train_loss", "area under loss", "g"),
    ("diverged", "diverged", "int"),
)
_ALWAYS = {"label", "steps_to_target", "seconds_to_target", "target_reached", "diverged"}
_NESTED = {"stats", "paired"}
# Flat keys left out of the main table: the over-seeds table shows them (and "reached" is
# the success rate as k/n).
_IN_SEEDS_TABLE = {"best_train_loss", "final_val_accuracy", "final_target", "success_rate"}
_METRIC_NAMES = {
    "final_train_loss": "final train loss",
    "best_train_loss": "best train loss",
    "final_val_accuracy": "final val acc",
    "best_val_accuracy": "best val acc",
    "final_distance": "final distance",
    "final_target": "final target metric",
    "auc_train_loss": "area under loss",
    "steps_to_target": "steps to target",
    "epochs_to_target": "epochs to target",
    "seconds_to_target": "time to target (s)",
}


def _columns(rows: list[dict[str, Any]], task: str) -> list[tuple[str, str, str]]:
    present = {k for row in rows for k in row}
    non_empty = {k for row in rows for k, v in row.items() if v is not None}
    columns = []
    for key, header, kind in _COLUMNS:
        if key in present and (key in non_empty or key in _ALWAYS):
            if key == "best_val_accuracy" and task == "regression":
                header, kind = "best val R²", "r2"
            if key == "final_train_loss" and task == "landscape":
                header = "final loss"
            columns.append((key, header, kind))
    known = {key for key, _, _ in _COLUMNS} | _NESTED | _IN_SEEDS_TABLE
    for row in rows:  # fields added to the summary later show up as they are
        for key, value in row.items():
            if key not in known and not isinstance(value, dict | list):
                known.add(key)
                columns.append((key, key.replace("_", " "), "g"))
    return columns


# ---------------------------------------------------------------- the page

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9;line-height:1.45}
main{max-width:1080px;margin:0 auto;padding:24px 20px 48px}
h1{font-size:1.6rem;margin:0 0 4px}
h2{font-size:1.2rem;margin:0 0 8px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:16px 18px;
margin:16px 0}
.meta{color:#555;margin:0}
.note{color:#666;font-size:.9rem;margin:4px 0 8px}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.85rem;
font-weight:600;background:#ddd}
.status-succeeded{background:#d8f0dc;color:#1d6b2d}
.status-failed{background:#f8d7da;color:#842029}
.status-running,.status-queued{background:#fff3cd;color:#7a5b00}
.status-cancelled{background:#e2e3e5;color:#41464b}
.error{background:#f8d7da;color:#842029;padding:8px 10px;border-radius:4px;
white-space:pre-wrap}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{padding:4px 7px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f3f4f6;font-weight:600;white-space:normal;vertical-align:bottom}
th.text,td.text{text-align:left}
td.wrap{white-space:normal;word-break:break-word;text-align:left}
tbody tr:hover{background:#fafbfc}
.scroll{overflow-x:auto}
svg.chart{display:block;max-width:100%;height:auto;margin:8px 0}
pre{background:#f6f8fa;border:1px solid #eee;border-radius:4px;padding:10px;overflow-x:auto;
font-size:.82rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dt{color:#555}dd{margin:0;word-break:break-word}
details summary{cursor:pointer;font-weight:600;margin:4px 0}
code{font-size:.85rem}
td code{white-space:normal;word-break:break-word}
footer{color:#888;font-size:.8rem;text-align:center}
"""


def _target_text(target: dict[str, Any]) -> str:
    metric = str(target.get("metric", "?"))
    direction = "≥" if metric.endswith(("accuracy", "r2")) else "≤"
    return f"{metric} {direction} {target.get('value')}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[tuple[str, bool]]]) -> str:
    """A table; each cell is (escaped html, is_text); text columns are left-aligned."""
    text_columns = [all(row[i][1] for row in rows) if rows else False for i in range(len(headers))]
    head = "".join(
        f'<th class="text">{esc(h)}</th>' if text else f"<th>{esc(h)}</th>"
        for h, text in zip(headers, text_columns, strict=True)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="text">{c}</td>' if text else f"<td>{c}</td>" for c, text in row)
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _summary_section(data: ReportData, task: str) -> str:
    summary = data.summary
    rows = [r for r in summary.get("optimizers", []) if isinstance(r, dict)]
    target = summary.get("target") or {}
    parts = ['<section id="summary"><h2>Summary</h2>']
    notes = []
    if target:
        notes.append(f"target: {esc(_target_text(target))}")
    if summary.get("best") is not None:
        notes.append(f"best: <b>{esc(summary['best'])}</b>")
    if notes:
        parts.append(f'<p class="note">{" · ".join(notes)}</p>')
    columns = _columns(rows, task)
    parts.append(
        _table(
            [h for _, h, _ in columns],
            [
                [
                    (
                        esc(row.get(key, "")) if kind == "text" else _num(row.get(key), kind),
                        kind == "text",
                    )
                    for key, _, kind in columns
                ]
                for row in rows
            ],
        )
    )
    parts.append(
        '<p class="note">Value columns are means over seeds; to-target columns are medians '
        "over the seeds that reached the target; a diverged run counts as not reached.</p>"
    )
    parts.append(_stats_table(rows))
    parts.append(_paired_table(rows))
    extra = {
        k: v
        for k, v in summary.items()
        if k not in {"task", "target", "optimizers", "environment", "best"}
    }
    if extra:
        parts.append(
            f"<details><summary>more summary fields</summary><pre>{esc(_pretty(extra))}</pre>"
            "</details>"
        )
    parts.append("</section>")
    return "".join(parts)


def _stats_table(rows: list[dict[str, Any]]) -> str:
    """``stats`` {metric: {mean, std, median, n}} as mean ± std (median and n on hover)."""
    stats = {
        str(row.get("label")): row["stats"] for row in rows if isinstance(row.get("stats"), dict)
    }
    metrics: list[str] = []
    for per_label in stats.values():
        for metric, value in per_label.items():
            has_values = not isinstance(value, dict) or value.get("n") not in (0, None)
            if metric not in metrics and has_values:
                metrics.append(metric)
    if not metrics:
        return ""

    def cell(value: Any) -> str:
        if not isinstance(value, dict):
            return _num(value)
        if value.get("n") == 0:
            return "&ndash;"
        mean, std = value.get("mean"), value.get("std")
        text = _num(mean) if std is None else f"{_num(mean)} ± {_num(std, 'g2')}"
        hover = ", ".join(
            f"{k} {_num(value[k], 'int' if k == 'n' else 'g')}"
            for k in ("median", "n")
            if value.get(k) is not None
        )
        return f'<span title="{esc(hover)}">{text}</span>' if hover else text

    table = _table(
        ["label", *[_METRIC_NAMES.get(m, m.replace("_", " ")) for m in metrics]],
        [
            [(esc(label), True), *[(cell(per_label.get(m)), False) for m in metrics]]
            for label, per_label in stats.items()
        ],
    )
    return (
        "<details><summary>over seeds: mean ± sample std (hover: median, n)</summary>"
        f"{table}</details>"
    )


def _paired_table(rows: list[dict[str, Any]]) -> str:
    """``paired``: each label minus the best, seed by seed, on the target metric."""
    paired = [(str(row.get("label")), row["paired"]) for row in rows if row.get("paired")]
    if not paired:
        return ""
    if not all(isinstance(p, dict) and "mean" in p for _, p in paired):
        body = esc(_pretty(dict(paired)))
        return f"<details><summary>paired comparisons</summary><pre>{body}</pre></details>"

    def interval(value: Any) -> str:
        if isinstance(value, list | tuple) and len(value) == 2:
            return f"[{_num(value[0])}, {_num(value[1])}]"
        return _num(value)

    table = _table(
        ["label", "reference", "metric", "seeds", "mean of label - reference", "95 % interval"],
        [
            [
                (esc(label), True),
                (esc(p.get("reference", "")), True),
                (esc(p.get("metric", "")), True),
                (_num(p.get("n"), "int"), False),
                (_num(p.get("mean")), False),
                (interval(p.get("ci95")), False),
            ]
            for label, p in paired
        ],
    )
    return (
        "<details><summary>paired comparisons with the best, seed by seed (same initial "
        f"weights and batches)</summary>{table}</details>"
    )


def _runs_section(data: ReportData) -> str:
    rows = [
        [
            (esc(run.label), True),
            (esc(run.optimizer), True),
            (_num(run.seed, "int"), False),
            (esc(run.status), True),
            (f"{_num(run.steps_done, 'int')} / {_num(run.total_steps, 'int')}", False),
            (
                f"step {_num(run.diverged_at_step, 'int')}" if run.diverged else "no",
                False,
            ),
            (_num(run.test_loss), False),
            (_num(run.test_accuracy), False),
            (
                f"<code>{esc(json.dumps(run.hyperparameters, separators=(', ', '=')))}</code>",
                True,
            ),
        ]
        for run in data.runs
    ]
    table = _table(
        [
            "label",
            "optimizer",
            "seed",
            "status",
            "steps",
            "diverged",
            "test loss",
            "test acc",
            "hyperparameters",
        ],
        rows,
    )
    return (
        '<section id="runs"><details><summary>Runs '
        f"({len(data.runs)})</summary>{table}</details></section>"
    )


def _environment_section(data: ReportData) -> str:
    items: list[tuple[str, Any]] = [
        ("device", data.device or "not recorded"),
        ("optbench", _version()),
    ]
    environment = data.summary.get("environment")
    if isinstance(environment, dict):
        items += [(str(k), v) for k, v in environment.items()]
    elif environment is not None:
        items.append(("environment", environment))
    if not any(k.lower().startswith("torch") for k, _ in items):
        items.append(("torch", "not recorded (the worker that trained the job records it)"))
    items += [
        ("created", _when(data.created_at)),
        ("started", _when(data.started_at)),
        ("finished", _when(data.finished_at)),
    ]
    if data.started_at and data.finished_at:
        items.append(("wall time", f"{(data.finished_at - data.started_at).total_seconds():.3g} s"))
    body = "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(v if isinstance(v, str) else _pretty(v))}</dd>"
        for k, v in items
    )
    return f'<section id="environment"><h2>Environment</h2><dl>{body}</dl></section>'


@dataclass
class _Context:
    data: ReportData
    spec: JobSpec | None
    task: str
    labels: list[str]
    colours: dict[str, tuple[str, bool]]
    runs_by_label: dict[str, list[RunInfo]]
    smoothing: float
    max_points: int

    def series(self, label: str, group: OverSeeds) -> plots.Series:
        colour, is_dashed = self.colours[label]
        band = group.seeds > 1
        return plots.Series(
            label,
            group.x,
            group.mean,
            group.low if band else None,
            group.high if band else None,
            colour,
            is_dashed,
        )


def _context(data: ReportData, smoothing: float, max_points: int) -> _Context:
    try:
        spec: JobSpec | None = JobSpec.model_validate(data.spec)
    except ValueError:  # a spec stored by an older version: still show what there is
        spec = None
    task = str(data.summary.get("task") or (spec.task if spec else "classification"))
    target_metric = str((data.summary.get("target") or {}).get("metric", ""))
    if target_metric.endswith("r2"):
        task = "regression" if task != "landscape" else task
    labels: list[str] = [entry.display_label for entry in spec.optimizers] if spec else []
    for run in data.runs:
        if run.label not in labels:
            labels.append(run.label)
    runs_by_label: dict[str, list[RunInfo]] = {label: [] for label in labels}
    for run in data.runs:
        runs_by_label[run.label].append(run)
    colours = {label: (plots.color(i), plots.dashed(i)) for i, label in enumerate(labels)}
    return _Context(data, spec, task, labels, colours, runs_by_label, smoothing, max_points)


def _loss_section(ctx: _Context) -> str:
    landscape = ctx.task == "landscape"
    smoothing = 0.0 if landscape else ctx.smoothing
    groups = {
        label: over_seeds(
            [
                (
                    ctx.data.steps[run.id]["step"],
                    ema(ctx.data.steps[run.id]["loss"], smoothing),
                )
                for run in runs
            ]
        )
        for label, runs in ctx.runs_by_label.items()
    }
    log_y = _all_positive(list(groups.values()))
    chart = plots.line_chart(
        [ctx.series(label, group) for label, group in groups.items()],
        title="Loss per step" if landscape else "Training loss per step",
        x_label="step",
        y_label="f(x, y)" if landscape else "training loss (batch)",
        log_y=log_y,
        max_points=ctx.max_points,
    )
    if landscape:
        how = "exact function values at each step's point, unsmoothed"
    elif smoothing > 0:
        how = (
            f"each run smoothed with a debiased exponential moving average, smoothing "
            f"{smoothing:g} (TensorBoard's)"
        )
    else:
        how = "unsmoothed"
    scale = "log scale" if log_y else "linear scale (some values are not positive)"
    per_epoch = ""
    if not landscape:  # gd takes one step per epoch: per epoch, every optimizer is comparable
        epoch_groups = {
            label: over_seeds(
                [
                    (ctx.data.epochs[run.id]["epoch"], ctx.data.epochs[run.id]["train_loss"])
                    for run in runs
                ]
            )
            for label, runs in ctx.runs_by_label.items()
        }
        per_epoch = plots.line_chart(
            [ctx.series(label, group) for label, group in epoch_groups.items()],
            title="Training loss per epoch",
            x_label="epoch",
            y_label="training loss (epoch mean)",
            log_y=_all_positive(list(epoch_groups.values())),
            reference=_reference(ctx, ("train_loss",)),
            max_points=ctx.max_points,
        )
        per_epoch = (
            '<p class="note">Per epoch: the sample-weighted mean of the epoch\'s batch losses, '
            f"unsmoothed (gd takes one step per epoch, so it is compared here).</p>{per_epoch}"
        )
    return (
        f'<section id="loss"><h2>{"Loss" if landscape else "Training loss"} per step</h2>'
        f'<p class="note">{esc(how)}; {_seeds_text(groups)}; {scale}; long series are '
        f"downsampled to ≤ {ctx.max_points} points keeping each bucket's min and max.</p>"
        f"{chart}{per_epoch}</section>"
    )


def _seeds_text(groups: dict[str, OverSeeds]) -> str:
    seeds = max((g.seeds for g in groups.values()), default=0)
    if seeds > 1:
        return "line: mean over seeds; band: min-max over seeds"
    return "one run per optimizer"


def _reference(ctx: _Context, metrics: Sequence[str]) -> tuple[float, str] | None:
    target = ctx.data.summary.get("target") or {}
    if target.get("metric") in metrics and isinstance(target.get("value"), int | float):
        return float(target["value"]), f"target {_target_text(target)}"
    return None


def _epoch_section(ctx: _Context) -> str:
    if ctx.task == "landscape":
        return ""
    r2 = ctx.task == "regression"
    name = "validation R²" if r2 else "validation accuracy"
    groups = {
        label: over_seeds(
            [
                (ctx.data.epochs[run.id]["epoch"], ctx.data.epochs[run.id]["val_accuracy"])
                for run in runs
            ]
        )
        for label, runs in ctx.runs_by_label.items()
    }
    chart = plots.line_chart(
        [ctx.series(label, group) for label, group in groups.items() if group.x],
        title=f"{name[0].upper()}{name[1:]} per epoch",
        x_label="epoch",
        y_label=name,
        reference=_reference(ctx, ("val_r2",) if r2 else ("val_accuracy",)),
        max_points=ctx.max_points,
    )
    return (
        f'<section id="validation"><h2>{esc(name.capitalize())} per epoch</h2>'
        f'<p class="note">{_seeds_text(groups)}; unsmoothed.</p>{chart}</section>'
    )


def _target_section(ctx: _Context) -> str:
    rows = [r for r in ctx.data.summary.get("optimizers", []) if isinstance(r, dict)]
    if not rows:
        return ""

    def bars(key: str) -> list[plots.Bar]:
        out = []
        for row in rows:
            label = str(row.get("label"))
            value = row.get(key)
            reached = row.get("target_reached")
            if isinstance(value, int | float):
                note = f"  {reached} reached" if reached else ""
            else:
                note = f" ({reached})" if reached else ""
            if row.get("diverged"):
                note += f", {row['diverged']} diverged"
            out.append(
                plots.Bar(
                    label,
                    float(value) if isinstance(value, int | float) else None,
                    note,
                    ctx.colours.get(label, (None, False))[0],
                )
            )
        return out

    target = ctx.data.summary.get("target") or {}
    steps = plots.bar_chart(
        bars("steps_to_target"),
        title="Steps to target",
        value_label="optimizer steps (median over the seeds that reached it)",
        value_format=lambda v: f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}",
    )
    seconds = plots.bar_chart(
        bars("seconds_to_target"),
        title="Time to target",
        value_label="training seconds (evaluation excluded; median over the seeds that reached it)",
        value_format=lambda v: f"{v:.3g} s",
    )
    return (
        '<section id="target"><h2>Steps and time to target</h2>'
        f'<p class="note">target: {esc(_target_text(target))}, checked at the end of each '
        "epoch; a run that never reaches it is not reached (it is not counted as the budget)."
        f"</p>{steps}{seconds}</section>"
    )


def _landscape_section(ctx: _Context) -> str:
    if ctx.task != "landscape":
        return ""
    dataset = ctx.data.spec.get("dataset") or {}
    name = str(dataset.get("name"))
    if name not in LANDSCAPES:
        return ""
    params = {"condition": dataset["condition"]} if "condition" in dataset else {}
    view = LANDSCAPES[name](**params)
    trajectories = [  # one polyline per run; the seeds of a label share its colour
        plots.Trajectory(
            label, ctx.data.steps[run.id]["x"], ctx.data.steps[run.id]["y"], ctx.colours[label][0]
        )
        for label, runs in ctx.runs_by_label.items()
        for run in runs
    ]
    xs = [v for t in trajectories for v in t.x if v is not None]
    ys = [v for t in trajectories for v in t.y if v is not None]
    start = dataset.get("start") or []
    x_range = _view_box(view.x_range, [*xs, *(m[0] for m in view.minima), *start[:1]])
    y_range = _view_box(view.y_range, [*ys, *(m[1] for m in view.minima), *start[1:2]])
    chart = plots.contour_chart(
        view.function,
        x_range,
        y_range,
        title=f"Trajectories on {name}",
        trajectories=trajectories,
        minima=view.minima,
        max_points=ctx.max_points,
    )
    doc = ""
    if ctx.spec is not None:
        doc = (type(ctx.spec.dataset).__doc__ or "").strip().splitlines()[0]
    groups = {
        label: over_seeds(
            [
                (ctx.data.epochs[run.id]["epoch"], ctx.data.epochs[run.id]["distance"])
                for run in runs
            ]
        )
        for label, runs in ctx.runs_by_label.items()
    }
    distance = ""
    if any(v is not None for g in groups.values() for v in g.mean):
        log_y = _all_positive(list(groups.values()))
        distance = plots.line_chart(
            [ctx.series(label, group) for label, group in groups.items() if group.x],
            title="Distance to the nearest minimum per step",
            x_label="step",
            y_label="distance",
            log_y=log_y,
            reference=_reference(ctx, ("distance",)),
            max_points=ctx.max_points,
        )
    return (
        f'<section id="landscape"><h2>The landscape: {esc(name)}</h2>'
        f'<p class="note">{esc(doc)} Each run\'s path: the point where each step evaluated '
        f"the function, from the start (open circle) to the last step (filled); "
        f"{len(trajectories)} runs.</p>{chart}{distance}</section>"
    )


def build_page(
    data: ReportData, *, smoothing: float = DEFAULT_SMOOTHING, max_points: int = MAX_POINTS
) -> str:
    """The page for already loaded data (``render_report`` = ``load`` + this)."""
    ctx = _context(data, smoothing, max_points)
    spec = data.spec
    dataset = spec.get("dataset") or {}
    model = spec.get("model") or {}
    seeds = spec.get("seeds") or []
    facts = [
        f"data set <b>{esc(dataset.get('name', '?'))}</b>",
        f"model <b>{esc(model.get('name', '?'))}</b>",
        f"{len(ctx.labels)} optimizers",
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}",
        f"{esc(spec.get('epochs', '?'))} epochs",
    ]
    if ctx.task != "landscape":
        facts.append(f"batch size {esc(spec.get('batch_size', '?'))}")
    status = esc(data.status)
    header = (
        f"<header><h1>{esc(data.name)}</h1>"
        f'<p class="meta"><span class="status status-{status}">{status}</span> '
        f"job <code>{esc(data.job_id)}</code> · {esc(ctx.task)} · {' · '.join(facts)}</p>"
    )
    if data.status not in FINISHED:
        header += (
            '<p class="note">The job is still running: this report shows what is stored so far.</p>'
        )
    if data.error:
        header += f'<p class="error">{esc(data.error)}</p>'
    header += "</header>"
    sections = [
        header,
        _summary_section(data, ctx.task),
        _landscape_section(ctx),
        _loss_section(ctx),
        _epoch_section(ctx),
        _target_section(ctx),
        _runs_section(data),
        f'<section id="spec"><h2>Spec</h2><pre>{esc(_pretty(spec))}</pre></section>',
        _environment_section(data),
        f"<footer>optbench {esc(_version())} · report generated "
        f"{esc(_when(datetime.now(UTC)))}</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>optbench report: {esc(data.name)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(s for s in sections if s)}</main></body></html>\n"
    )

"""The page's chart sections: loss, validation, steps and time to target, landscapes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services import plots
from services.plots import esc
from services.report.data import ReportData, RunInfo
from services.report.format import _num, _target_text
from services.report.landscapes import LANDSCAPES, _view_box
from services.report.series import OverSeeds, _all_positive, ema, over_seeds
from services.spec import JobSpec


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

    def groups_per_epoch(self, key: str) -> dict[str, OverSeeds]:
        """Per label: the mean and min-max over its runs of the epoch series ``key``."""
        return {
            label: over_seeds(
                [(self.data.epochs[run.id]["epoch"], self.data.epochs[run.id][key]) for run in runs]
            )
            for label, runs in self.runs_by_label.items()
        }


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
        epoch_groups = ctx.groups_per_epoch("train_loss")
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
    groups = ctx.groups_per_epoch("val_accuracy")
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
        value_format=lambda v: _num(v, "int"),
    )
    seconds = plots.bar_chart(
        bars("seconds_to_target"),
        title="Time to target",
        value_label="training seconds (evaluation excluded; median over the seeds that reached it)",
        value_format=lambda v: _num(v, "s"),
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
    groups = ctx.groups_per_epoch("distance")
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

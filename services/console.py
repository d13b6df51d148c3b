"""Terminal output of the CLI: rich consoles and the tables (summary, job list, job status,
API keys). Live progress is in services/cli/progress.py.

Colour (decided here): only when the stream is a terminal, and never under ``NO_COLOR`` (any
non-empty value, https://no-color.org) or ``--no-color``. Without colour no style escapes are
written at all (no bold either), so a log or a pipe gets plain text. Off a terminal the
console is as wide as ``COLUMNS`` says, else 1000 columns: a table row stays one line that
``grep`` and logs keep whole, instead of wrapping at an 80-column guess.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

_color_allowed = True  # False after --no-color (services/cli/common.py)

UNWRAPPED_WIDTH = 1000  # off a terminal, unless COLUMNS says otherwise


def allow_color(allowed: bool) -> None:
    """``--no-color`` turns colour off for every console made after it."""
    global _color_allowed
    _color_allowed = allowed


def make_console(stream: TextIO | None = None, *, height: int | None = None) -> Console:
    """A console on ``stream`` (default: standard output, as it is when printing)."""
    file = stream if stream is not None else sys.stdout
    terminal = file.isatty()
    color = terminal and _color_allowed and not os.environ.get("NO_COLOR")
    width = None
    if not terminal:
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() else UNWRAPPED_WIDTH
    return Console(
        file=file,
        force_terminal=terminal,
        color_system="auto" if color else None,
        width=width,
        height=height,
        # Text is printed as it is: a job named "[bold]" stays "[bold]", ":x:" stays ":x:".
        markup=False,
        emoji=False,
        highlight=False,
    )


def bar(done: int, total: int | None, width: int, *, color: bool) -> Text:
    """A progress bar ``width`` characters wide. Without colour the two parts must differ by
    glyph (``[####....]``), since rich's bar tells them apart only by colour."""
    fraction = min(done / total, 1.0) if total else 0.0
    filled = int(width * fraction)
    if not color:
        return Text("[" + "#" * filled + "." * (width - filled) + "]")
    style = "green" if total and done >= total else "cyan"
    return Text.assemble(("━" * filled, style), ("━" * (width - filled), "grey30"))


def plain_table(*columns: str, right: Iterable[str] = ()) -> Table:
    """A borderless table: a header line, a rule, the rows; the first column flush left."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    aligned_right = set(right)
    for title in columns:
        table.add_column(title, justify="right" if title in aligned_right else "left")
    return table


_HEAD = (("optimizer", "label", "{}"), ("final train loss", "final_train_loss", "{:.4f}"))
_TAIL = (
    ("steps to target", "steps_to_target", "{:.0f}"),
    ("time to target", "seconds_to_target", "{:.2f} s"),
    ("reached", "target_reached", "{}"),
    ("diverged", "diverged", "{}"),
)
# The score column depends on the task: accuracy, R², or a landscape's distance to a minimum.
COLUMNS = {
    "classification": (*_HEAD, ("best val acc", "best_val_accuracy", "{:.2%}"), *_TAIL),
    "regression": (*_HEAD, ("best val R²", "best_val_accuracy", "{:.4f}"), *_TAIL),
    "landscape": (
        ("optimizer", "label", "{}"),
        ("final loss", "final_train_loss", "{:.4g}"),
        ("final distance", "final_distance", "{:.3g}"),
        *_TAIL,
    ),
}


def summary_table(summary: Mapping[str, Any]) -> RenderableType:
    """The target line, then one row per optimizer label, ranked as listed in the spec."""
    target = summary.get("target", {})
    columns = COLUMNS[summary.get("task", "classification")]
    table = plain_table(*(title for title, _, _ in columns), right=[t for t, _, _ in columns[1:]])
    for row in summary.get("optimizers", []):
        table.add_row(
            *("-" if row.get(key) is None else fmt.format(row[key]) for _, key, fmt in columns)
        )
    metric = str(target.get("metric"))
    direction = ">=" if metric.endswith(("accuracy", "r2")) else "<="
    return Group(Text(f"target: {metric} {direction} {target.get('value')}"), table)


def duration(job: Mapping[str, Any], now: datetime | None = None) -> str:
    """How long the job trained: start to finish, or to now while it runs; ``-`` if queued."""
    started = _moment(job.get("started_at"))
    if started is None:
        return "-"
    end = _moment(job.get("finished_at")) or now or datetime.now(UTC)
    seconds = max(0, int((end - started).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


ID_PREFIX = 8  # hex digits of a job id shown in the list: any unique prefix names the job


def job_table(jobs: Iterable[Mapping[str, Any]], shown: int, total: int | None) -> RenderableType:
    """``optbench list``: id prefix, name, status, data set, model, progress, duration, then
    how many are shown of how many match (``total`` None: more than were fetched)."""
    table = plain_table(
        "id",
        "name",
        "status",
        "dataset",
        "model",
        "progress",
        "duration",
        right=("progress", "duration"),
    )
    for job in jobs:
        fraction = job["progress"].get("fraction")
        spec = job.get("spec", {})
        table.add_row(
            str(job["id"])[:ID_PREFIX],
            job["name"],
            job["status"],
            str(spec.get("dataset", {}).get("name", "-")),
            str(spec.get("model", {}).get("name", "-")),
            f"{fraction:.0%}" if fraction is not None else "-",
            duration(job),
        )
    more = f" of {total}" if total is not None else ", more match: raise --limit"
    return Group(table, Text(f"({shown} shown{more})"))


def job_status(job: Mapping[str, Any], *, color: bool = False) -> RenderableType:
    """A job's head line, one row per run (label, seed, bar, steps, status), and why the runs
    that did not fuse trained alone."""
    progress = job["progress"]
    fraction = progress.get("fraction")
    share = f" ({fraction:.0%})" if fraction is not None else ""
    lines: list[RenderableType] = [
        Text(
            f"job {job['id']}: {job['status']}  {progress['steps_done']}"
            f"/{progress['total_steps'] or '?'} steps{share}  {job['name']}"
        )
    ]
    if job.get("error"):
        lines.append(Text(f"error: {job['error']}"))
    runs = Table.grid(padding=(0, 2))
    for justify in ("left", "left", "left", "right", "left"):
        runs.add_column(justify=justify, no_wrap=True)
    for run in job.get("runs", []):
        done, total = run["steps_done"], run["total_steps"]
        flag = " diverged" if run.get("diverged") else ""
        flag += " fused" if run.get("fused") else ""
        runs.add_row(
            run["label"],
            f"seed {run['seed']}",
            bar(done, total, 24, color=color),
            f"{done}/{total if total is not None else '?'}",
            f"{run['status']}{flag}",
        )
    lines.append(runs)
    lines.extend(Text(line) for line in _alone_lines(job))
    return Group(*lines)


def _alone_lines(job: Mapping[str, Any]) -> list[str]:
    """Why the runs that did not train together with others trained on their own, one line
    per reason, in the user's words (``fusion_note``)."""
    reasons: dict[str, list[str]] = {}
    for run in job.get("runs", []):
        if run.get("fused") is False and run.get("fusion"):
            reasons.setdefault(run["fusion"], []).append(f"{run['label']} (seed {run['seed']})")
    return [f"{', '.join(runs)}: {fusion_note(reason)}" for reason, runs in reasons.items()]


# The engine's reasons for a run that trained on its own (workers/engine/plan.py, stored in
# ``run.fusion``) say how it plans; a user reading `optbench status` wants what it means for
# them. Patterns in order; a reason none matches is shown as it is.
_NOTES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"no other run of this part shares its full-batch schedule"),
        "trained on its own: it takes one step per epoch on the whole training set, the "
        "others one per mini-batch",
    ),
    (
        re.compile(r"no other run of this part shares its mini-batch schedule"),
        "trained on its own: no other run here takes the same mini-batch steps",
    ),
    (
        re.compile(r"fusion is turned off for this job"),
        'trained one run at a time, as the spec asks ("execution": {{"fuse": false}})',
    ),
    (
        re.compile(r"(?P<name>\w+) re-evaluates the loss through a closure"),
        "trained on its own: {name} computes the loss several times in each step",
    ),
    (
        re.compile(r"the model cannot fuse"),
        "trained one run at a time: this model cannot train several runs in one pass",
    ),
    (
        re.compile(r"fused groups of this schedule hold at most (?P<n>\d+) runs"),
        "trained on its own: on a CPU at most {n} runs of this size train together",
    ),
    (
        re.compile(r"on a CPU, \d+ runs' activations"),
        "trained one run at a time: on a CPU these runs are faster one by one than together",
    ),
)


def fusion_note(reason: str) -> str:
    """Why a run trained on its own, said for a user (see ``_NOTES``)."""
    for pattern, note in _NOTES:
        found = pattern.search(reason)
        if found:
            return note.format(**found.groupdict())
    return reason


def keys_table(keys: Iterable[Mapping[str, Any]]) -> RenderableType:
    """``optbench keys list``: id, owner and dates (UTC), never the key."""
    table = plain_table("id", "owner", "created (UTC)", "last used", "revoked")
    for key in keys:
        table.add_row(
            key["id"],
            key["owner"],
            *(_when(key[name]) for name in ("created_at", "last_used_at", "revoked_at")),
        )
    return table


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"

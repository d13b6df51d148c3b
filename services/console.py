"""Terminal output of the CLI: the per-optimizer table and a progress line."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

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


def summary_table(summary: dict[str, Any]) -> str:
    """A plain-text table, one row per optimizer label, ranked as listed in the spec."""
    target = summary.get("target", {})
    columns = COLUMNS[summary.get("task", "classification")]
    header = [title for title, _, _ in columns]
    rows = [
        ["-" if row.get(key) is None else fmt.format(row[key]) for _, key, fmt in columns]
        for row in summary.get("optimizers", [])
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    metric = str(target.get("metric"))
    direction = ">=" if metric.endswith(("accuracy", "r2")) else "<="
    target_text = f"target: {metric} {direction} {target.get('value')}"
    return "\n".join([target_text, line(header), line(["-" * w for w in widths]), *map(line, rows)])


class ProgressLine:
    """One line that redraws in place on a terminal, and prints every few seconds otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, every_seconds: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every_seconds
        self._last = float("-inf")  # the first update always shows
        self.started = time.monotonic()

    def update(
        self, done: int, total: int | None, status: str = "", *, force: bool = False
    ) -> None:
        now = time.monotonic()
        if not (self.tty or force) and now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self.started
        if total:
            width = 30
            filled = int(width * min(done / total, 1.0))
            bar = "#" * filled + "." * (width - filled)
            text = f"[{bar}] {done}/{total} steps  {done / total:6.1%}  {elapsed:5.1f} s  {status}"
        else:
            text = f"{status}  {elapsed:5.1f} s"
        if self.tty:
            self.stream.write("\r" + text.ljust(79))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _bar(done: int, total: int | None, width: int = 24) -> str:
    if not total:
        return "." * width
    filled = int(width * min(done / total, 1.0))
    return "#" * filled + "." * (width - filled)


def run_lines(job: dict[str, Any]) -> list[str]:
    """One line per run: label, seed, a bar, steps done / total and the run's status."""
    runs = job.get("runs", [])
    width = max((len(run["label"]) for run in runs), default=5)
    lines = []
    for run in runs:
        done, total = run["steps_done"], run["total_steps"]
        counts = f"{done}/{total if total is not None else '?'}"
        flag = " diverged" if run.get("diverged") else ""
        flag += " fused" if run.get("fused") else ""
        lines.append(
            f"{run['label']:<{width}}  seed {run['seed']:<3} [{_bar(done, total)}] "
            f"{counts:>13}  {run['status']}{flag}"
        )
    return lines


def job_table(jobs: list[dict[str, Any]], total: int) -> str:
    """``optbench list``: one line per job (id, status, progress, data set, model, runs, when,
    name), and how many of how many are shown."""
    rows = [("id", "status", "progress", "dataset", "model", "runs", "created", "name")]
    for job in jobs:
        fraction = job["progress"].get("fraction")
        spec = job.get("spec", {})
        rows.append(
            (
                str(job["id"]),
                job["status"],
                f"{fraction:.0%}" if fraction is not None else "-",
                str(spec.get("dataset", {}).get("name", "-")),
                str(spec.get("model", {}).get("name", "-")),
                str(len(job.get("runs", []))),
                str(job["created_at"])[:19].replace("T", " "),
                job["name"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"({len(jobs)} shown of {total})")
    return "\n".join(lines)


def job_status(job: dict[str, Any]) -> str:
    progress = job["progress"]
    fraction = progress.get("fraction")
    share = f" ({fraction:.0%})" if fraction is not None else ""
    head = (
        f"job {job['id']}: {job['status']}  {progress['steps_done']}"
        f"/{progress['total_steps'] or '?'} steps{share}  {job['name']}"
    )
    if job.get("error"):
        head += f"\nerror: {job['error']}"
    return "\n".join([head, *run_lines(job), *_alone_lines(job)])


def _alone_lines(job: dict[str, Any]) -> list[str]:
    """Why the runs that did not fuse trained alone, one line per reason."""
    reasons: dict[str, list[str]] = {}
    for run in job.get("runs", []):
        if run.get("fused") is False and run.get("fusion"):
            reasons.setdefault(run["fusion"], []).append(f"{run['label']} (seed {run['seed']})")
    return [f"trained alone: {', '.join(runs)}: {reason}" for reason, runs in reasons.items()]


class RunBoard:
    """Per-run progress bars that redraw in place on a terminal; elsewhere a line every few
    seconds and the last state at the end."""

    def __init__(self, stream: TextIO = sys.stderr, every_seconds: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every_seconds
        self._drawn = 0
        self._last = float("-inf")  # the first update always shows

    def update(self, job: dict[str, Any]) -> None:
        finished = job["status"] in ("succeeded", "failed", "cancelled")
        now = time.monotonic()
        if self.tty:
            lines = job_status(job).splitlines()
            if self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F")  # back to the block's first line
            self.stream.write("".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        elif finished or now - self._last >= self.every:
            self._last = now
            done, total = job["progress"]["steps_done"], job["progress"]["total_steps"]
            self.stream.write(f"{job['status']}: {done}/{total or '?'} steps\n")
        self.stream.flush()

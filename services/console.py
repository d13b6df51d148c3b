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
        self._last = 0.0
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

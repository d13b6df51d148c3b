"""Live progress of a job (``watch``, ``submit --watch``, ``run``, ``demo``).

Fed job states in the API's shape (``{"status", "runs": [{"label", "seed", "steps_done",
"total_steps", "status"}, ...]}``: ``client.wait`` gives them, ``run`` builds them from the
engine's hooks), it shows **one bar per optimizer label with its seeds combined** (the steps
done over the total of that label's runs), each with its rate (steps/s) and ETA, and an
overall bar.

Decided here:

- On a terminal the block redraws in place (rich Live, at most ``REDRAWS_PER_SECOND``) and
  always fits the terminal: with more labels than rows, the labels still running are shown
  and the others are folded into one line (``+14 more: 10 done, 4 queued``).
- Elsewhere (a pipe, a CI log) it prints one plain line every ``every_seconds``, when the
  job's status changes and when it ends, never a redraw.
- It draws on standard error, so standard output carries only the result (the table or
  JSON); "a terminal" means standard error is one.
- A queued job is one line, "waiting for a worker", not bars of "0/?": its steps are known
  once a worker has planned it (``total_steps``), and from then on the bars move.
- The rate is over the last ``RATE_WINDOW`` seconds of updates, so that it follows the
  current speed (a fused group, a slow optimizer); ETA is what is left at that rate.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.console import bar, make_console

FINISHED = ("succeeded", "failed", "cancelled")
RATE_WINDOW = 20.0  # seconds of updates the rate is measured over
REDRAWS_PER_SECOND = 8.0
NARROW = 80  # columns: below, the block drops its runs column
Clock = Callable[[], float]
OVERALL = "\x00all"  # the whole job's key in Rates: no label can be it, not even "all"


@dataclass
class LabelState:
    """An optimizer label's runs (its seeds) added up."""

    label: str
    done: int = 0
    total: int | None = 0  # None while the total of one of its runs is unknown
    runs: int = 0
    finished: int = 0
    running: int = 0
    failed: int = 0

    @property
    def state(self) -> str:
        if self.runs and self.finished == self.runs:
            return "failed" if self.failed else "done"
        return "running" if self.running or self.finished else "queued"


def by_label(runs: Iterable[Mapping[str, Any]]) -> list[LabelState]:
    """One state per label, in the order the labels first appear (the spec's)."""
    labels: dict[str, LabelState] = {}
    for run in runs:
        state = labels.setdefault(run["label"], LabelState(run["label"]))
        state.runs += 1
        state.done += run["steps_done"]
        if state.total is None or run["total_steps"] is None:
            state.total = None
        else:
            state.total += run["total_steps"]
        state.finished += run["status"] in FINISHED
        state.running += run["status"] == "running"
        state.failed += run["status"] == "failed"
    return list(labels.values())


class Rates:
    """Steps per second of each key (a label, or the whole job) over a sliding window."""

    def __init__(self, window: float = RATE_WINDOW, clock: Clock = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self.samples: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, key: str, done: int) -> None:
        now = self.clock()
        samples = self.samples.setdefault(key, deque())
        samples.append((now, done))
        # Keep one sample older than the window, so the rate spans the whole window.
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()

    def rate(self, key: str) -> float | None:
        samples = self.samples.get(key)
        if not samples or len(samples) < 2:
            return None
        (start, first), (end, last) = samples[0], samples[-1]
        return max(last - first, 0) / (end - start) if end > start else None


def eta(done: int, total: int | None, rate: float | None) -> str:
    """``H:MM:SS`` left at ``rate``; ``-`` when it cannot be told (no total, no speed yet)."""
    if total is not None and done >= total:
        return "0:00:00"
    if total is None or not rate:
        return "-"
    seconds = int((total - done) / rate + 0.5)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _speed(rate: float | None) -> str:
    return "- steps/s" if rate is None else f"{rate:,.0f} steps/s"


def _counts(done: int, total: int | None) -> str:
    return f"{done}/{total if total is not None else '?'}"


def _overall(labels: list[LabelState], name: str = "all") -> LabelState:
    total: int | None = 0
    for state in labels:
        total = None if total is None or state.total is None else total + state.total
    return LabelState(
        name,
        done=sum(s.done for s in labels),
        total=total,
        runs=sum(s.runs for s in labels),
        finished=sum(s.finished for s in labels),
        running=sum(s.running for s in labels),
        failed=sum(s.failed for s in labels),
    )


def _tally(labels: Iterable[LabelState]) -> str:
    """How many labels are in each state: ``3 done, 2 running``."""
    states: dict[str, int] = {}
    for state in labels:
        states[state.state] = states.get(state.state, 0) + 1
    return ", ".join(f"{count} {name}" for name, count in states.items())


def shown_labels(labels: list[LabelState], rows: int) -> tuple[list[LabelState], list[LabelState]]:
    """The labels that get a row among ``rows``, and those folded into one: all of them if
    they fit, else the running ones (as many as fit beside the fold row)."""
    if len(labels) <= rows:
        return labels, []
    room = max(rows - 1, 0)  # one row is the fold row
    shown = [state for state in labels if state.state == "running"][:room]
    return shown, [state for state in labels if state not in shown]


def progress_block(
    job: Mapping[str, Any], rates: Rates, *, width: int, height: int, color: bool
) -> Table:
    """The terminal block: one row per shown label, a fold row if needed, the overall row;
    at most ``height - 1`` rows (the cursor waits on the line below) and none wider than
    ``width`` (cells are cut, never wrapped, so each row stays one line)."""
    labels = by_label(job.get("runs", []))
    shown, folded = shown_labels(labels, max(height - 2, 0))  # the overall row, the cursor
    name_width = min(max((len(s.label) for s in labels), default=3), 20)
    narrow = width < NARROW  # no runs column: the rate, ETA and state matter more
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, overflow="ellipsis", max_width=20)
    grid.add_column(no_wrap=True)
    for _ in range(3 if narrow else 4):
        grid.add_column(no_wrap=True, justify="right", overflow="ellipsis")
    grid.add_column(no_wrap=True, overflow="ellipsis")
    # The bar takes what the other columns leave, between 10 and 40 characters.
    bar_width = max(10, min(40, width - name_width - (52 if narrow else 60)))
    rows: list[tuple[LabelState, float | None, str]] = [
        (state, rates.rate(state.label), state.state) for state in shown
    ]
    if folded:
        speeds = [rate for s in folded if (rate := rates.rate(s.label)) is not None]
        fold = _overall(folded, f"+{len(folded)} more")
        rows.append((fold, sum(speeds) if speeds else None, _tally(folded)))
    overall = _overall(labels)
    rows.append((overall, rates.rate(OVERALL), job["status"]))
    for state, rate, stand in rows:
        runs = [] if narrow else [f"{state.runs} run{'s' if state.runs != 1 else ''}"]
        grid.add_row(
            Text(state.label, style="bold" if state is overall else ""),
            bar(state.done, state.total, bar_width, color=color),
            _counts(state.done, state.total),
            _speed(rate),
            f"ETA {eta(state.done, state.total, rate)}",
            *runs,
            stand,
        )
    return grid


def progress_line(job: Mapping[str, Any], rates: Rates, elapsed: float) -> str:
    """One plain line: the job's steps, rate, ETA, how its labels stand and the running ones."""
    labels = by_label(job.get("runs", []))
    overall = _overall(labels)
    rate = rates.rate(OVERALL)
    share = f" ({overall.done / overall.total:.0%})" if overall.total else ""
    stand = _tally(labels)
    running = [s for s in labels if s.state == "running"]
    names = ", ".join(
        f"{s.label} {s.done / s.total:.0%}" if s.total else s.label for s in running[:4]
    )
    more = f" (+{len(running) - 4} more)" if len(running) > 4 else ""
    text = (
        f"{job['status']}: {_counts(overall.done, overall.total)} steps{share}, {_speed(rate)}, "
        f"ETA {eta(overall.done, overall.total, rate)}, {elapsed:.0f} s; labels: {stand}"
    )
    return text + (f"; running: {names}{more}" if running else "")


def waiting_line(job: Mapping[str, Any]) -> str:
    """A queued job's one line: its steps are counted once a worker has planned it."""
    runs = len(job.get("runs", []))
    return f"queued: waiting for a worker to start the job ({runs} run{'s' if runs != 1 else ''})"


class JobProgress:
    """Shows a job's progress while it trains: ``with JobProgress() as p: ...p.update(job)``."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        every_seconds: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.console = console or make_console(sys.stderr)
        self.every = every_seconds
        self.clock = clock
        self.rates = Rates(clock=clock)
        self.started = clock()
        self._live: Live | None = None
        self._last = float("-inf")  # the first update always shows
        self._status: str | None = None

    def __enter__(self) -> JobProgress:
        if self.console.is_terminal:
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def update(self, job: Mapping[str, Any]) -> None:
        labels = by_label(job.get("runs", []))
        for state in labels:
            self.rates.observe(state.label, state.done)
        self.rates.observe(OVERALL, sum(state.done for state in labels))
        now = self.clock()
        ended = job["status"] in FINISHED
        changed = job["status"] != self._status
        self._status = job["status"]
        waiting = job["status"] == "queued"  # no totals yet: no bars of "0/?" to show
        if self._live is not None:
            if ended or changed or now - self._last >= 1 / REDRAWS_PER_SECOND:
                self._last = now
                width, height = self.console.size
                color = self.console.color_system is not None
                block: Table | Text = (
                    Text(waiting_line(job))
                    if waiting
                    else progress_block(job, self.rates, width=width, height=height, color=color)
                )
                self._live.update(block, refresh=True)
        elif ended or changed or (now - self._last >= self.every and not waiting):
            self._last = now
            elapsed = now - self.started
            line = waiting_line(job) if waiting else progress_line(job, self.rates, elapsed)
            self.console.print(line, soft_wrap=True)

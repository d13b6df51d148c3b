"""Where a job's time went, as the worker saw it: the timestamps of ``GET /v1/jobs/{id}``'s
``timings`` block (services/api/schemas.py ``JobTimings``).

The job row has when it was created, started and finished; these add what only the worker
knows, precisely: when its task was picked up, when its data were ready, when the first and
the last training step ran, when the last part's rows were committed, and the seconds spent
in training steps. A job trained in several parts (workers/parts.py) merges each part's into
one block under the job's row lock (``merge``): the earliest first step, the latest last step
and commit, and the step seconds of the part that spent most (parts train side by side, so
the job's training takes as long as its longest part).

Wall-clock UTC timestamps (ISO 8601), comparable with the job's own ``created_at``: the API
and the workers of one deployment share a clock (NTP), and the step seconds are measured
apart from it (``time.perf_counter``), so they stay right whatever the clocks do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from workers.engine import Hooks
from workers.engine.config import RunConfig
from workers.engine.hooks import RunResult, StepColumns

# The job's timestamps, in the order they happen.
PICKED_UP, DATA_READY, FIRST_STEP, LAST_STEP, ROWS_COMMITTED = (
    "picked_up_at",
    "data_ready_at",
    "first_step_at",
    "last_step_at",
    "rows_committed_at",
)
STEP_SECONDS = "step_seconds"
_EARLIEST = (PICKED_UP, DATA_READY, FIRST_STEP)
_LATEST = (LAST_STEP, ROWS_COMMITTED)


def now() -> str:
    return _text(datetime.now(UTC))


def _text(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")  # one width: compares as text


class PartTimer(Hooks):
    """A part's first and last step and its seconds in training steps, from the engine's
    hooks: a group's first run starting is its first step (its models are built then, a few
    milliseconds), its last flush holds its last step, and every run's result its seconds in
    training steps (a fused step's time shared among its members, so the sum counts it once)."""

    def __init__(self) -> None:
        # Moments, formatted once in ``timings``: a flush only takes the clock.
        self.first_step: datetime | None = None
        self.last_step: datetime | None = None
        self.step_seconds = 0.0

    def on_run_start(self, run: RunConfig, total_steps: int) -> None:
        if self.first_step is None:
            self.first_step = datetime.now(UTC)

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        self.last_step = datetime.now(UTC)

    def on_run_end(self, run: RunConfig, result: RunResult) -> None:
        self.step_seconds += result.train_seconds

    def timings(self, rows_committed: str) -> dict[str, Any]:
        """This part's block, its rows committed at ``rows_committed``."""
        block: dict[str, Any] = {ROWS_COMMITTED: rows_committed, STEP_SECONDS: self.step_seconds}
        if self.first_step is not None:
            block[FIRST_STEP] = _text(self.first_step)
        if self.last_step is not None:
            block[LAST_STEP] = _text(self.last_step)
        return block


def merge(stored: Mapping[str, Any] | None, part: Mapping[str, Any]) -> dict[str, Any]:
    """The job's block with one more part's: earliest starts, latest ends, the most step
    seconds of one part. ISO 8601 UTC timestamps of one format compare as strings."""
    merged = dict(stored or {})
    for key, value in part.items():
        old = merged.get(key)
        if old is None:
            merged[key] = value
        elif key in _EARLIEST:
            merged[key] = min(old, value)
        elif key in _LATEST:
            merged[key] = max(old, value)
        elif key == STEP_SECONDS:
            merged[key] = max(float(old), float(value))
    return merged

"""Engine hooks that keep everything in memory (tests, notebooks)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from workers.engine import EpochRecord, Hooks, RunConfig, RunResult, StepColumns, StepRecord


class MemorySink(Hooks):
    def __init__(self) -> None:
        self.total_steps = 0
        self.planned: dict[int, int] = {}
        self.steps: dict[int, list[StepRecord]] = defaultdict(list)
        self.epochs: dict[int, list[EpochRecord]] = defaultdict(list)
        self.results: dict[int, RunResult] = {}
        self.flushes: dict[int, int] = defaultdict(int)

    def on_start(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def on_run_start(self, run: RunConfig, total_steps: int) -> None:
        self.planned[run.key] = total_steps

    def on_steps(self, run: RunConfig, steps: StepColumns) -> None:
        self.flushes[run.key] += 1
        self.steps[run.key].extend(steps.records())

    def on_epochs(self, run: RunConfig, epochs: Sequence[EpochRecord]) -> None:
        self.epochs[run.key].extend(epochs)

    def on_run_end(self, run: RunConfig, result: RunResult) -> None:
        self.results[run.key] = result

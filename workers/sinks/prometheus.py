"""Engine hooks → this worker process's Prometheus metrics (services/telemetry.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from services.telemetry import (
    RUNS_ACTIVE,
    RUNS_DIVERGED,
    SECONDS_TO_TARGET,
    STEP_SECONDS,
    STEPS_TO_TARGET,
    TRAIN_SAMPLES,
    TRAIN_STEPS,
)
from workers.engine import EpochRecord, Hooks, RunConfig, RunResult, StepColumns


class PrometheusSink(Hooks):
    """Counts steps and samples, times steps, and observes each run's steps- and
    time-to-target once, at the first epoch that reached the job's target."""

    def __init__(
        self,
        dataset: str,
        model: str,
        device: str,
        target_column: str,
        reached: Callable[[float], bool],
    ) -> None:
        self.dataset, self.model, self.device = dataset, model, device
        self.target_column, self.reached = target_column, reached
        self._last_seconds: dict[int, float] = {}
        self._done: set[int] = set()

    def on_run_start(self, run: RunConfig, total_steps: int) -> None:
        RUNS_ACTIVE.inc()
        self._last_seconds[run.key] = 0.0

    def on_steps(self, run: RunConfig, steps: StepColumns) -> None:
        name = run.optimizer.name
        TRAIN_STEPS.labels(name, self.dataset, self.model, self.device).inc(len(steps))
        samples = int(steps.samples.sum())
        TRAIN_SAMPLES.labels(name, self.dataset, self.model, self.device).inc(samples)
        timer = STEP_SECONDS.labels(name, self.device)
        # train_seconds is cumulative: a step's time is the difference to the one before.
        seconds = steps.train_seconds
        durations = np.diff(seconds, prepend=self._last_seconds.get(run.key, 0.0))
        for duration in np.maximum(durations, 0.0).tolist():
            timer.observe(duration)
        self._last_seconds[run.key] = float(seconds[-1])

    def on_epochs(self, run: RunConfig, epochs: Sequence[EpochRecord]) -> None:
        if run.key in self._done:
            return
        for record in epochs:
            value = getattr(record, self.target_column, None)
            if value is not None and self.reached(value):
                STEPS_TO_TARGET.labels(run.optimizer.name, self.dataset).observe(record.step)
                SECONDS_TO_TARGET.labels(run.optimizer.name, self.dataset).observe(
                    record.train_seconds
                )
                self._done.add(run.key)
                return

    def on_run_end(self, run: RunConfig, result: RunResult) -> None:
        RUNS_ACTIVE.dec()
        if result.diverged:
            RUNS_DIVERGED.labels(run.optimizer.name, self.dataset).inc()

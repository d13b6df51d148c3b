"""Engine hooks → this worker process's Prometheus metrics (services/telemetry.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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


def observe_all(histogram: Any, amounts: np.ndarray) -> None:
    """``histogram.observe(amount)`` for each amount, in one pass: the count of each bucket
    and the sum added once per flush instead of once per step (prometheus_client has no
    bulk observe; ``_upper_bounds``, ``_buckets`` and ``_sum`` are what its ``observe``
    updates, an amount counting in the first bucket whose bound is at least it). A
    histogram without them (another client version) is observed value by value."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts.tolist():
            histogram.observe(amount)
        return
    if not len(amounts):
        return
    # The first bound >= amount; NaN (in no bucket, as observe has it) sorts past the last.
    found = np.searchsorted(np.asarray(bounds, dtype=np.float64), amounts, side="left")
    counts = np.bincount(found, minlength=len(bounds))
    for index, count in enumerate(counts[: len(bounds)].tolist()):
        if count:
            buckets[index].inc(count)
    total.inc(float(amounts.sum()))


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
        self._children: dict[int, tuple[Any, Any, Any]] = {}

    def on_run_start(self, run: RunConfig, total_steps: int) -> None:
        RUNS_ACTIVE.inc()
        self._last_seconds[run.key] = 0.0

    def on_steps(self, run: RunConfig, steps: StepColumns) -> None:
        children = self._children.get(run.key)
        if children is None:  # a run's labelled series, looked up once
            name = run.optimizer.name
            children = self._children[run.key] = (
                TRAIN_STEPS.labels(name, self.dataset, self.model, self.device),
                TRAIN_SAMPLES.labels(name, self.dataset, self.model, self.device),
                STEP_SECONDS.labels(name, self.device),
            )
        counted_steps, counted_samples, timer = children
        counted_steps.inc(len(steps))
        counted_samples.inc(int(steps.samples.sum()))
        # train_seconds is cumulative: a step's time is the difference to the one before.
        seconds = steps.train_seconds
        durations = np.empty(len(seconds))
        durations[0] = seconds[0] - self._last_seconds.get(run.key, 0.0)
        np.subtract(seconds[1:], seconds[:-1], out=durations[1:])
        observe_all(timer, np.maximum(durations, 0.0, out=durations))
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

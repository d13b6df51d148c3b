"""Engine hooks → Prometheus counters of this worker process."""

from __future__ import annotations

from collections.abc import Sequence

from services.telemetry import RUNS_ACTIVE, RUNS_DIVERGED, TRAIN_SAMPLES, TRAIN_STEPS
from workers.engine import Hooks, RunConfig, RunResult, StepRecord


class PrometheusSink(Hooks):
    def __init__(self, dataset: str, device: str) -> None:
        self.dataset, self.device = dataset, device

    def on_run_start(self, run: RunConfig, total_steps: int) -> None:
        RUNS_ACTIVE.inc()

    def on_steps(self, run: RunConfig, steps: Sequence[StepRecord]) -> None:
        labels = (run.optimizer.name, self.dataset, self.device)
        TRAIN_STEPS.labels(*labels).inc(len(steps))
        TRAIN_SAMPLES.labels(*labels).inc(sum(record.samples for record in steps))

    def on_run_end(self, run: RunConfig, result: RunResult) -> None:
        RUNS_ACTIVE.dec()
        if result.diverged:
            RUNS_DIVERGED.labels(run.optimizer.name).inc()

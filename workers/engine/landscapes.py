"""2-D test functions: the lecture's picture of optimizers crossing a loss surface.

Each landscape is f(p) for a point p = (x, y), with its known minima (the convergence metric
is the distance to the nearest one; ``saddle`` has none).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.engine import optimizers, schedules
from workers.engine.buffer import Divergence
from workers.engine.config import JobConfig, RunConfig
from workers.engine.hooks import EpochRecord, Hooks, RunResult, StepRecord
from workers.engine.registry import Registry


@dataclass(frozen=True)
class Landscape:
    function: Callable[[torch.Tensor], torch.Tensor]
    minima: tuple[tuple[float, float], ...]
    params: dict[str, Any] = field(default_factory=dict)

    def __call__(self, point: torch.Tensor) -> torch.Tensor:
        return self.function(point)

    def distance(self, point: torch.Tensor) -> float | None:
        if not self.minima:
            return None
        x, y = point.tolist()
        return min(math.hypot(x - mx, y - my) for mx, my in self.minima)


LANDSCAPES: Registry[Callable[..., Landscape]] = Registry("landscape")


@LANDSCAPES.register("rosenbrock")
def _rosenbrock() -> Landscape:
    return Landscape(lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2, ((1.0, 1.0),))


@LANDSCAPES.register("beale")
def _beale() -> Landscape:
    def f(p: torch.Tensor) -> torch.Tensor:
        x, y = p[0], p[1]
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2

    return Landscape(f, ((3.0, 0.5),))


@LANDSCAPES.register("himmelblau")
def _himmelblau() -> Landscape:
    minima = ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126))
    return Landscape(lambda p: (p[0] ** 2 + p[1] - 11) ** 2 + (p[0] + p[1] ** 2 - 7) ** 2, minima)


@LANDSCAPES.register("rastrigin")
def _rastrigin() -> Landscape:
    return Landscape(lambda p: 20 + (p**2 - 10 * torch.cos(2 * math.pi * p)).sum(), ((0.0, 0.0),))


@LANDSCAPES.register("saddle")
def _saddle() -> Landscape:
    return Landscape(lambda p: p[0] ** 2 - p[1] ** 2, ())


@LANDSCAPES.register("quadratic")
def _quadratic(condition: float = 25.0) -> Landscape:
    return Landscape(lambda p: 0.5 * (p[0] ** 2 + condition * p[1] ** 2), ((0.0, 0.0),))


class LandscapeRun:
    """Optimizers on a 2-D function: the point (x, y) is the model, each epoch one step.

    Runs on the CPU in float64 whatever the job's device: two parameters gain nothing from a
    GPU, and double precision keeps long trajectories near a minimum exact.
    """

    def __init__(self, config: JobConfig) -> None:
        params = dict(config.dataset.params)
        self.start = tuple(params.pop("start"))
        self.function = LANDSCAPES.get(config.dataset.name)(**params)
        self.config = config

    def train(self, run: RunConfig, hooks: Hooks) -> RunResult:
        epochs = self.config.epochs
        hooks.on_run_start(run, epochs)
        point = torch.nn.Parameter(torch.tensor(self.start, dtype=torch.float64))
        optimizer = optimizers.build(run.optimizer, [point])
        scheduler = schedules.build(run.optimizer.schedule, optimizer, epochs)
        divergence = Divergence(self.config.divergence_ratio)
        steps: list[StepRecord] = []
        epoch_records: list[EpochRecord] = []
        train_seconds, last_step, diverged_at = 0.0, 0, None

        def loss_at_point() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = self.function(point)
            loss.backward()
            return loss

        for step in range(1, epochs + 1):
            started = time.perf_counter()
            lr = float(optimizer.param_groups[0]["lr"])
            x, y = point.detach().tolist()
            loss = loss_at_point()
            grad_norm = (
                float(torch.linalg.vector_norm(point.grad)) if point.grad is not None else 0.0
            )
            if optimizers.needs_closure(optimizer):
                optimizer.step(loss_at_point)  # type: ignore[arg-type]
            else:
                optimizer.step()
            if scheduler is not None:
                if schedules.steps_per_epoch_only(scheduler):
                    scheduler.step(float(loss))  # type: ignore[arg-type]
                else:
                    scheduler.step()
            train_seconds += time.perf_counter() - started
            value = float(loss.detach())
            if divergence.check(value, grad_norm):
                diverged_at = step
                break
            with torch.no_grad():
                after = float(self.function(point))
            steps.append(StepRecord(step, step, value, None, lr, grad_norm, train_seconds, 1, x, y))
            epoch_records.append(
                EpochRecord(
                    step,
                    step,
                    value,
                    None,
                    after,
                    None,
                    train_seconds,
                    self.function.distance(point.detach()),
                )
            )
            last_step = step
            if len(steps) >= self.config.flush_every:
                self._flush(run, hooks, steps, epoch_records)
        self._flush(run, hooks, steps, epoch_records)
        result = RunResult(last_step, diverged_at is not None, train_seconds, diverged_at)
        hooks.on_run_end(run, result)
        return result

    @staticmethod
    def _flush(
        run: RunConfig, hooks: Hooks, steps: list[StepRecord], epochs: list[EpochRecord]
    ) -> None:
        if steps:
            hooks.on_flush([(run, list(steps))])
            hooks.on_epochs(run, list(epochs))
        steps.clear()
        epochs.clear()

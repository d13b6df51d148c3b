"""2-D test functions: the lecture's picture of optimizers crossing a loss surface.

Each landscape is f(p) for a point p = (x, y), with its known minima (the convergence metric
is the distance to the nearest one; ``saddle`` has none). p may also be a (2, K) tensor of K
points, giving K values: a group of K points is one evaluation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.engine.config import JobConfig
from workers.engine.fused_layers import SHARED, Act
from workers.engine.members import Members, PointMembers
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
    return Landscape(
        lambda p: 20 + (p**2 - 10 * torch.cos(2 * math.pi * p)).sum(dim=0), ((0.0, 0.0),)
    )


@LANDSCAPES.register("saddle")
def _saddle() -> Landscape:
    return Landscape(lambda p: p[0] ** 2 - p[1] ** 2, ())


@LANDSCAPES.register("quadratic")
def _quadratic(condition: float = 25.0) -> Landscape:
    return Landscape(lambda p: 0.5 * (p[0] ** 2 + condition * p[1] ** 2), ((0.0, 0.0),))


class LandscapeProblem:
    """Optimizers on a 2-D function: the point (x, y) is the model, each epoch one step.

    A member is a point (workers/engine/members.py ``PointMembers``); its step's loss is the
    function at the point before the step, its epoch's validation loss the function after it,
    and its distance to the nearest minimum the convergence measure. There is no score and no
    test split. Runs on the CPU in float64 whatever the job's device: two parameters gain
    nothing from a GPU, and double precision keeps long trajectories near a minimum exact.
    """

    has_score = False
    classification = False
    dtype = torch.float64

    def __init__(self, config: JobConfig) -> None:
        params = dict(config.dataset.params)
        self.start = tuple(params.pop("start"))
        self.function = LANDSCAPES.get(config.dataset.name)(**params)
        self.config = config

    def steps_per_epoch(self, full_batch: bool) -> int:
        return 1

    def batches(self, seed: int, full_batch: bool) -> Iterator[tuple[int, list[None]]]:
        for epoch in range(1, self.config.epochs + 1):
            yield epoch, [None]

    def inputs(self, batch: object, seed_of: object) -> tuple[Act, None]:
        return (_NO_INPUT, SHARED), None

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def losses(
        self, outputs: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The values at the points (K,), and no score (NaN)."""
        return outputs, torch.full_like(outputs, math.nan)

    def evaluate(self, members: Members, name: str) -> tuple[list[float], list[float]] | None:
        """``val``: the function at the points now (after the epoch's step); no test split."""
        if name != "val" or not isinstance(members, PointMembers):
            return None
        return members.values_at().tolist(), [math.nan] * members.k

    def distances(self, members: Members) -> list[float | None] | None:
        if not isinstance(members, PointMembers):
            return None
        return [self.function.distance(point) for point in members.points.detach()]


_NO_INPUT = torch.empty(0)

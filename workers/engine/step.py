"""One training step of a group: forward, backward, and each active member's update.

``train_step`` is the whole of a step and nothing else: no reading back from the device, no
hooks, no I/O. It returns the step's values as one (K, fields) float64 tensor that stays on
the device until the recorder reads a flush's worth of them in one copy
(workers/engine/recorder.py), and each updated member's time.

The loss is the sum of the members' mean losses, so each member's gradient is its own loss's
(no member's parameters meet another's in the forward). A member's time is an equal share of
the group's forward/backward plus its own optimizer step, so per-optimizer costs stay visible.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.optim import lr_scheduler

from workers.engine import optimizers, schedules
from workers.engine.config import RunConfig
from workers.engine.fused_layers import Act
from workers.engine.members import Members

# The columns of a step's values, in order; landscapes add the point (x, y) before the step.
LOSS, SCORE, GRAD_NORM, X, Y = range(5)
Scheduler = lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau


class Losses(Protocol):
    """What a step needs of the problem (workers/engine/problem.py)."""

    def losses(
        self, outputs: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def autocast(self) -> contextlib.AbstractContextManager[object]: ...


@dataclass
class Update:
    """Member k's optimizer and learning-rate schedule."""

    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None

    @classmethod
    def build(cls, run: RunConfig, members: Members, k: int, total_steps: int) -> Update:
        optimizer: torch.optim.Optimizer
        if run.optimizer.groups:  # one optimizer per group, stepped as one
            optimizer = optimizers.build_grouped(run.optimizer, members.named_parameters(k))
        else:
            optimizer = optimizers.build(
                run.optimizer, members.parameters(k, run.optimizer.torch_class)
            )
        return cls(optimizer, schedules.build(run.optimizer.schedule, optimizer, total_steps))

    @property
    def lr(self) -> float:
        """The rate the next step uses."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def per_epoch(self) -> bool:
        """A schedule that steps once per epoch, on the validation loss (plateau)."""
        return schedules.steps_per_epoch_only(self.scheduler)

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> None:
        """One update (through ``closure`` for LBFGS), then the per-step schedule's step."""
        if closure is not None and optimizers.needs_closure(self.optimizer):
            self.optimizer.step(closure)  # type: ignore[arg-type]  # torch types it as -> float
        else:
            self.optimizer.step()
        if self.scheduler is not None and not self.per_epoch:
            self.scheduler.step()


def train_step(
    problem: Losses,
    members: Members,
    updates: Sequence[Update],
    active: Sequence[int],
    act: Act,
    y: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[int, float]]:
    """One step of the ``active`` members on the batch (``act``, ``y``): the step's values
    (K, fields), and each active member's seconds."""
    started = time.perf_counter()
    positions = members.positions()

    def forward_backward() -> tuple[torch.Tensor, torch.Tensor]:
        members.zero_grad()
        with problem.autocast():
            losses, scores = problem.losses(members.forward(act), y)
        losses.sum().backward()
        return losses, scores

    losses, scores = forward_backward()
    columns = [losses.detach().double(), scores.detach().double(), members.grad_norms().double()]
    values = torch.stack(columns, dim=1)
    if positions is not None:
        values = torch.cat([values, positions.double()], dim=1)
    shared = (time.perf_counter() - started) / len(active)

    def closure() -> torch.Tensor:  # LBFGS re-evaluates the loss (a group of one member)
        return forward_backward()[0].sum()

    seconds: dict[int, float] = {}
    for k in active:
        began = time.perf_counter()
        updates[k].step(closure)
        seconds[k] = shared + time.perf_counter() - began
    return values, seconds

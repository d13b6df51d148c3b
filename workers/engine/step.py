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
import inspect
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.optim import lr_scheduler
from torch.optim import optimizer as torch_optimizer

from workers.engine import optimizers, schedules
from workers.engine.config import RunConfig
from workers.engine.fused_layers import Act
from workers.engine.kernel_step import kernel_step
from workers.engine.members import Members

# The columns of a step's values, in order; landscapes add the point (x, y) before the step.
LOSS, SCORE, GRAD_NORM, X, Y = range(5)
Scheduler = lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau
RawStep = Callable[[torch.optim.Optimizer], object]

# Whether ``Update.step`` calls torch.optim's own update rules directly (``direct_step``).
# A switch only so that the benchmarks measure both ways: bench_fusion.py in one process,
# compare.py through its worker's environment (``--worker-env OPTBENCH_DIRECT_STEP=0``).
DIRECT_STEP = os.environ.get("OPTBENCH_DIRECT_STEP", "1") != "0"


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

    def __post_init__(self) -> None:
        self._direct = direct_step(self.optimizer)
        self._kernel = kernel_step(self.optimizer) if self._direct is not None else None

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
        elif self._direct is not None and DIRECT_STEP and not _step_hooks(self.optimizer):
            with torch.no_grad():
                if self._kernel is None or not self._kernel():
                    self._direct(self.optimizer)
            self.optimizer._opt_called = True  # type: ignore[attr-defined]  # as the scheduler's wrapper would
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


def direct_step(optimizer: torch.optim.Optimizer) -> RawStep | None:
    """torch.optim's own update rule of ``optimizer``, without the wrappers around it, or
    None where it must be called as ``optimizer.step()``.

    ``optimizer.step()`` of a torch.optim class runs its update rule inside a profiler
    ``record_function``, the step hooks' loops, a grad-mode switch and (where a schedule is
    attached) the schedule's call counter: about 15 µs per call on this project's CPU, which
    a fused group pays once per member and step (7 members: 0.11 ms of a 2 ms digits step,
    measured in benchmarks/bench_fusion.py). The rule itself is the same function either way,
    so the numbers are the same; ``Update.step`` does the rest itself (no grad, the counter)
    and goes through ``optimizer.step()`` whenever a step hook is registered. Only for
    torch.optim's own classes (a plugin's step may be anything) that are not differentiable
    and take no closure.
    """
    cls = type(optimizer)
    if not cls.__module__.startswith("torch.optim.") or optimizers.needs_closure(optimizer):
        return None
    if optimizer.defaults.get("differentiable", False):
        return None
    function = inspect.unwrap(cls.step)
    if not getattr(function, "__module__", "").startswith("torch.optim."):
        return None  # a wrapper we do not know of: keep the ordinary call (AdamW's is Adam's)
    return function


def _step_hooks(optimizer: torch.optim.Optimizer) -> bool:
    """Whether any optimizer step hook (global or this instance's) is registered."""
    return bool(
        torch_optimizer._global_optimizer_pre_hooks
        or torch_optimizer._global_optimizer_post_hooks
        or optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
    )

"""Checkpoints: a run's whole training state at a flush point, and when to take one.

A ``RunState`` holds what training needs to go on exactly as if it had never stopped:

- the model's ``state_dict`` (parameters and buffers, e.g. batch-norm statistics), the same
  whether the run trained alone or in a fused group (a member's row is read back into its
  own module's names), so a member resumes from it in any fused group;
- the optimizer's and the scheduler's ``state_dict``;
- the step buffer's state (the divergence bound, the epoch's running sums so far);
- the training seconds so far and the torch RNG state (dropout draws from it);
- the data position: ``step`` and ``epochs`` (epochs whose end, evaluation and per-epoch
  schedule step are done). Batches are drawn from the run's seeded generator, so resuming
  replays the permutations and skips the batches already trained: no iterator state to keep.

The optimizer's state is not interchangeable between layouts: a fused member's element-wise
optimizer updates its whole row as one flat tensor, an alone run's one tensor per parameter.
``layout`` records which; a run resumes only from a checkpoint of the layout it trains in now,
and otherwise starts again from its first step (workers/checkpoints.py decides, before
training, and supersedes the stored rows accordingly).

Taking one is the caller's business (``Hooks.on_checkpoint``): the state holds the live
tensors, so a hook must copy or serialise it before it returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

ALONE, FUSED, POINT = "alone", "fused", "point"  # workers/engine/members.py


@dataclass(frozen=True)
class RunState:
    step: int  # steps trained (the last one stored before this checkpoint)
    epochs: int  # epochs whose end-of-epoch work is done
    layout: str  # ALONE, FUSED or POINT
    state: dict[str, Any]  # model, optimizer, scheduler, buffer, seconds, rng


class CheckpointClock:
    """When to checkpoint: at flush points ``every_steps`` steps after the last checkpoint,
    and at epoch ends; never sooner than ``min_seconds`` after the last one (a checkpoint of
    a big model costs its size in writes). ``every_steps`` 0: never."""

    def __init__(self, every_steps: int, min_seconds: float, step: int = 0) -> None:
        self.every_steps, self.min_seconds = every_steps, min_seconds
        self.last_step, self.last_time = step, time.monotonic()

    def due(self, step: int, epoch_end: bool, urgent: bool = False) -> bool:
        """``urgent``: now, whatever the schedule (a hook asked for one)."""
        if step <= self.last_step:
            return False
        if urgent:
            return True
        if not self.every_steps:
            return False
        if time.monotonic() - self.last_time < self.min_seconds:
            return False
        return epoch_end or step - self.last_step >= self.every_steps

    def taken(self, step: int) -> None:
        self.last_step, self.last_time = step, time.monotonic()


def rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def epochs_to_skip(state: RunState | None, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs done, batches of the next epoch done) at ``state``; (0, 0) from the start."""
    if state is None:
        return 0, 0
    return state.epochs, state.step - state.epochs * steps_per_epoch

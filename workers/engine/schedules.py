"""Learning-rate schedules from ``torch.optim.lr_scheduler``, one per optimizer entry.

Units are optimizer steps (``step_size``, ``milestones``, ``t_max``, ``warmup_steps``), so a
schedule means the same for ``gd`` (one step per epoch) and mini-batch optimizers; only
``plateau`` steps once per epoch, on the validation loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import lr_scheduler


def build(
    schedule: dict[str, Any] | None, optimizer: torch.optim.Optimizer, total_steps: int
) -> lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None:
    if not schedule:
        return None
    params = {k: v for k, v in schedule.items() if k != "name"}
    name = schedule["name"]
    if name == "step":
        return lr_scheduler.StepLR(optimizer, **params)
    if name == "multistep":
        return lr_scheduler.MultiStepLR(optimizer, **params)
    if name == "exponential":
        return lr_scheduler.ExponentialLR(optimizer, **params)
    if name == "cosine":
        t_max = params.pop("t_max", None) or total_steps
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, **params)
    if name == "warmup_cosine":
        warmup = min(params["warmup_steps"], max(total_steps - 1, 1))
        return lr_scheduler.SequentialLR(
            optimizer,
            [
                lr_scheduler.LinearLR(
                    optimizer, start_factor=params["start_factor"], total_iters=warmup
                ),
                lr_scheduler.CosineAnnealingLR(
                    optimizer, T_max=max(total_steps - warmup, 1), eta_min=params["eta_min"]
                ),
            ],
            milestones=[warmup],
        )
    if name == "onecycle":
        # Cycle momentum only where the optimizer has one to cycle.
        cycle = any(k in optimizer.defaults for k in ("momentum", "betas")) and (
            optimizer.defaults.get("momentum", 1) != 0
        )
        return lr_scheduler.OneCycleLR(
            optimizer, total_steps=total_steps, cycle_momentum=cycle, **params
        )
    if name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **params)
    raise ValueError(f"unknown schedule '{name}'")


def steps_per_epoch_only(scheduler: object) -> bool:
    """ReduceLROnPlateau reacts to a metric, once per epoch; the others step with the optimizer."""
    return isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)

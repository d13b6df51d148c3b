"""Learning-rate schedules per optimizer entry (``torch.optim.lr_scheduler``).

Units are optimizer steps, so a schedule means the same for ``gd`` (one step per epoch) and
for mini-batch optimizers; ``plateau`` alone acts once per epoch, on the validation loss.
The engine builds each in workers/engine/schedules.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, field_validator

from services.spec.base import StrictModel

Gamma = Annotated[float, Field(gt=0.0, le=1.0, description="multiplicative decay factor")]
Steps = Annotated[int, Field(ge=1, le=10_000_000)]


class StepSchedule(StrictModel):
    """Multiply the learning rate by gamma every step_size steps."""

    name: Literal["step"]
    step_size: Steps
    gamma: Gamma = 0.1


class MultiStepSchedule(StrictModel):
    """Multiply the learning rate by gamma at each milestone step."""

    name: Literal["multistep"]
    milestones: list[Steps] = Field(min_length=1, max_length=100)
    gamma: Gamma = 0.1

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if milestones != sorted(set(milestones)):
            raise ValueError(f"milestones must be strictly increasing, got {milestones}")
        return milestones


class ExponentialSchedule(StrictModel):
    """Multiply the learning rate by gamma every step."""

    name: Literal["exponential"]
    gamma: Gamma


class CosineSchedule(StrictModel):
    """Cosine annealing from the learning rate to eta_min over t_max steps (default: the run)."""

    name: Literal["cosine"]
    t_max: Steps | None = None
    eta_min: float = Field(0.0, ge=0.0)


class WarmupCosineSchedule(StrictModel):
    """Linear warm-up from start_factor x lr over warmup_steps, then cosine annealing."""

    name: Literal["warmup_cosine"]
    warmup_steps: Steps
    start_factor: float = Field(0.01, gt=0.0, le=1.0)
    eta_min: float = Field(0.0, ge=0.0)


class OneCycleSchedule(StrictModel):
    """One-cycle: up to max_lr, then down to max_lr / (div_factor x final_div_factor)."""

    name: Literal["onecycle"]
    max_lr: float = Field(gt=0.0, le=100.0)
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)
    anneal_strategy: Literal["cos", "linear"] = "cos"
    div_factor: float = Field(25.0, gt=0.0)
    final_div_factor: float = Field(1e4, gt=0.0)


class PlateauSchedule(StrictModel):
    """Multiply the learning rate by factor when the validation loss stops improving."""

    name: Literal["plateau"]
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(10, ge=0, le=10_000, description="epochs without improvement")
    threshold: float = Field(1e-4, ge=0.0)
    min_lr: float = Field(0.0, ge=0.0)


ScheduleSpec = Annotated[
    StepSchedule
    | MultiStepSchedule
    | ExponentialSchedule
    | CosineSchedule
    | WarmupCosineSchedule
    | OneCycleSchedule
    | PlateauSchedule,
    Discriminator("name"),
]
SCHEDULE_NAMES = (
    "step",
    "multistep",
    "exponential",
    "cosine",
    "warmup_cosine",
    "onecycle",
    "plateau",
)

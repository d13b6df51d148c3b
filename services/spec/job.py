"""The job spec: the public contract of ``POST /v1/jobs`` (extend it, don't break it)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from services.spec.base import StrictModel
from services.spec.data import DatasetSpec
from services.spec.models import ModelSpec
from services.spec.optimizers import REFUSED, OptimizerEntry, canonical_name

TargetMetric = Literal["val_accuracy", "train_accuracy", "val_loss", "train_loss"]


class TargetSpec(StrictModel):
    """The convergence target. Accuracy targets are reached at >= value, loss targets at <= value.

    Targets are checked on epoch-level metrics (the validation metrics exist only per epoch,
    and an epoch's train loss is far less noisy than one batch's); steps-to-target is the
    global step at the end of the first epoch that reached it.
    """

    metric: TargetMetric = "val_accuracy"
    value: float = Field(0.9, ge=0.0, le=1e6)

    @model_validator(mode="after")
    def _check_accuracy_range(self) -> TargetSpec:
        if self.metric.endswith("accuracy") and self.value > 1.0:
            raise ValueError(f"an accuracy target is a fraction in [0, 1], got {self.value}")
        return self

    def reached(self, value: float) -> bool:
        return value >= self.value if self.metric.endswith("accuracy") else value <= self.value


class JobSpec(StrictModel):
    """A comparison: train ``model`` on ``dataset`` once per optimizer entry and seed.

    Runs of one seed start from identical initial weights and see identical mini-batches in
    identical order, so their differences are the optimizer's alone.
    """

    name: str = Field("comparison", min_length=1, max_length=200)
    dataset: DatasetSpec
    model: ModelSpec
    optimizers: list[OptimizerEntry] = Field(min_length=1, max_length=64)
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536, description="mini-batch size (gd ignores it)")
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        default=[0],
        min_length=1,
        max_length=32,
        description="one run per optimizer entry and seed; "
        "a seed sets the initial weights and the batch order",
    )
    target: TargetSpec = Field(default_factory=TargetSpec)

    @field_validator("optimizers", mode="before")
    @classmethod
    def _refuse_unsupported(cls, entries: Any) -> Any:
        if isinstance(entries, list):
            for index, entry in enumerate(entries):
                name = canonical_name(entry.get("name")) if isinstance(entry, dict) else None
                if isinstance(name, str) and name in REFUSED:
                    raise ValueError(f"optimizers[{index}].name: {REFUSED[name]}")
        return entries

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _unique_labels(self) -> JobSpec:
        seen: dict[str, int] = {}
        for index, entry in enumerate(self.optimizers):
            label = entry.display_label
            if label in seen:
                raise ValueError(
                    f"optimizers[{index}]: duplicate label '{label}' "
                    f"(also optimizers[{seen[label]}]); "
                    "give each entry a distinct 'label'"
                )
            seen[label] = index
        return self

    def runs(self) -> list[tuple[str, int]]:
        """(label, seed) of every run, in the order they are stored and trained."""
        return [(entry.display_label, seed) for seed in self.seeds for entry in self.optimizers]


LECTURE_SPEC: dict[str, Any] = {
    "name": "lecture exercise: 8 optimizers on digits",
    "dataset": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "hidden": [128]},
    "optimizers": [
        {"name": "gd", "lr": 0.5},
        {"name": "sgd", "lr": 0.05},
        {"name": "momentum", "lr": 0.05, "momentum": 0.9},
        {"name": "nag", "lr": 0.05, "momentum": 0.9},
        {"name": "adagrad", "lr": 0.05},
        {"name": "rmsprop", "lr": 0.001},
        {"name": "adadelta", "lr": 1.0},
        {"name": "adam", "lr": 0.001},
    ],
    "epochs": 10,
    "batch_size": 64,
    "seeds": [0],
    "target": {"metric": "val_accuracy", "value": 0.95},
}

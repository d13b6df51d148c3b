"""Engine configuration: frozen dataclasses built by adapters (never read from the environment)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Samples per forward pass when evaluating a whole split. Larger chunks stream activations
# through memory instead of the caches: measured on the 2-core VM, one thread, medians of 7
# (ms per split at 256 / 1024 / 4096): LeNet-5 on 1,800 images 167 / 159 / 260, the MNIST-1D
# MLP on 4,000 samples 15.1 / 13.4 / 19.4, a 784-256-10 MLP on 12,000 samples 86 / 90 / 99.
EVAL_CHUNK = 1024


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParameterGroupConfig:
    """One parameter group of a grouped entry (services/spec/groups.py resolved it): the
    parameters, by their names in the module's ``named_parameters()``, that one optimizer
    updates with these keyword arguments."""

    name: str  # the catalog name
    torch_class: str
    hyperparameters: dict[str, Any]
    parameters: tuple[str, ...]


@dataclass(frozen=True)
class OptimizerConfig:
    label: str  # unique within the job
    name: str  # the catalog name (gd, nag, adamw, ...)
    torch_class: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    full_batch: bool = False
    schedule: dict[str, Any] | None = None  # {"name": "cosine", ...}; see engine/schedules.py
    # Parameter groups, each with its own optimizer; empty: every parameter trains with this
    # entry's own (torch_class, hyperparameters). Every parameter is in exactly one group.
    groups: tuple[ParameterGroupConfig, ...] = ()

    @property
    def torch_classes(self) -> tuple[str, ...]:
        """Every optimizer class the entry steps: its groups', or its own."""
        if self.groups:
            return tuple(dict.fromkeys(group.torch_class for group in self.groups))
        return (self.torch_class,)


@dataclass(frozen=True)
class RunConfig:
    """One run: an optimizer entry and a seed. ``key`` identifies it to the hooks (a run id)."""

    key: int
    optimizer: OptimizerConfig
    seed: int
    # A tuning study's trial: it may be pruned, and never reads the test split.
    trial: bool = False


# Which members stop at a rung: (value at the rung per member, higher is better) → members.
# The rules live with the study (services/study/pruning.py); the adapter hands one over, so
# the engine imports nothing of the services.
PruningRule = Callable[[Mapping[int, float | None], bool], set[int]]


@dataclass(frozen=True)
class PruningConfig:
    """Pruning of trials at epoch rungs: ``decide`` is the study's rule."""

    decide: PruningRule
    rungs: tuple[int, ...]
    column: str  # the epoch record's field the rule reads (val_accuracy, train_loss, ...)
    higher_is_better: bool


@dataclass(frozen=True)
class JobConfig:
    dataset: DatasetConfig
    model: ModelConfig
    runs: tuple[RunConfig, ...]
    epochs: int
    batch_size: int
    flush_every: int = 100
    device: str = "cpu"
    eval_every_steps: int | None = None  # also evaluate on the validation split every N steps
    # A run stops as diverged when its loss is non-finite or exceeds this many times
    # max(first loss, 1).
    divergence_ratio: float = 1e4
    mixed_precision: bool = False  # bfloat16 autocast for forward and loss
    # Fused groups (workers/engine/plan.py): "auto" where fusing pays on this device,
    # "always" wherever the model can fuse, "never".
    fuse: str = "auto"
    dtype: str = "float32"  # parameters and data: float32, or float64 for exact comparisons
    # Checkpoints (workers/engine/checkpoint.py): at epoch ends and flush points every N
    # steps, at most one per min seconds; 0 steps: none (in-process runs need none).
    checkpoint_every_steps: int = 0
    checkpoint_min_seconds: float = 0.0
    pruning: PruningConfig | None = None

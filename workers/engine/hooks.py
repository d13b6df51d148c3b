"""What the engine reports, and the interface it reports through.

The engine calls hooks in batches: ``on_flush`` and ``on_epochs`` once per flush (every
``JobConfig.flush_every`` steps and at each epoch end), epochs after their steps. Steps come
as columns (``StepColumns``: one numpy array per field, a run's steps of one flush), read back
from the device in one copy per flush and handed on as they are: the SQL sink encodes them
into ``COPY`` without a Python object per row. Epochs (a few per flush) come as records.
Sinks (SQL, Prometheus, a progress printer) implement ``Hooks``.

"accuracy" is the classification accuracy, or R² for regression; landscapes have none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.engine.checkpoint import RunState
from workers.engine.config import RunConfig

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class StepRecord:
    step: int  # 1-based, global over the run
    epoch: int  # 1-based
    loss: float  # on this step's batch, before the update
    accuracy: float | None  # on this step's batch, before the update
    lr: float  # the learning rate this step used
    grad_norm: float  # L2 norm of all gradients of this step
    train_seconds: float  # training time since the run started (evaluation excluded)
    samples: int  # batch size (for throughput); not stored per step
    x: float | None = None  # landscapes: where this step's loss was evaluated
    y: float | None = None
    val_loss: float | None = None  # set when a mid-epoch evaluation ran after this step
    val_accuracy: float | None = None


@dataclass(frozen=True)
class StepColumns:
    """One run's steps of one flush, a numpy array per field (all of one length), in the
    order of ``services.db.models.STEP_FIELDS`` plus ``samples``. Floats are float64 with
    NaN where a step has no value (no accuracy on a landscape, no mid-epoch evaluation,
    no point); integers are int64. The arrays are the engine's: read them, do not write."""

    step: IntArray  # 1-based, global over the run
    epoch: IntArray  # 1-based
    loss: FloatArray  # on this step's batch, before the update
    accuracy: FloatArray  # on this step's batch, before the update (R² for regression)
    lr: FloatArray  # the learning rate this step used
    grad_norm: FloatArray  # L2 norm of all gradients of this step
    train_seconds: FloatArray  # training time since the run started (evaluation excluded)
    x: FloatArray  # landscapes: where this step's loss was evaluated
    y: FloatArray
    val_loss: FloatArray  # set where a mid-epoch evaluation ran after this step
    val_accuracy: FloatArray
    samples: IntArray  # batch size (throughput); not stored per step

    def __len__(self) -> int:
        return len(self.step)

    def records(self) -> list[StepRecord]:
        """The steps as records, NaN read as None (tests, notebooks, printing)."""
        names = [f.name for f in fields(StepRecord)]
        columns = [getattr(self, name).tolist() for name in names]
        nullable = {name for name in names if name not in _REQUIRED}
        for index, name in enumerate(names):
            if name in nullable:
                columns[index] = [None if v != v else v for v in columns[index]]
        return [StepRecord(*values) for values in zip(*columns, strict=True)]

    @classmethod
    def from_records(cls, records: Iterable[StepRecord]) -> StepColumns:
        """Columns of records (None read as NaN): for tests and benchmarks that write rows."""
        rows = list(records)
        values: dict[str, Any] = {}
        for f in fields(cls):
            column = [getattr(row, f.name) for row in rows]
            if f.name in _INTEGER:
                values[f.name] = np.array(column, dtype=np.int64)
            else:
                values[f.name] = np.array(
                    [np.nan if v is None else v for v in column], dtype=np.float64
                )
        return cls(**values)


_INTEGER = frozenset({"step", "epoch", "samples"})
_REQUIRED = frozenset({"step", "epoch", "loss", "lr", "grad_norm", "train_seconds", "samples"})


@dataclass(frozen=True, slots=True)
class EpochRecord:
    epoch: int
    step: int  # the global step at the end of the epoch
    train_loss: float  # sample-weighted mean over the epoch's batches
    train_accuracy: float | None
    val_loss: float
    val_accuracy: float | None
    train_seconds: float
    distance: float | None = None  # landscapes: to the nearest minimum, after the epoch


@dataclass(frozen=True, slots=True)
class RunResult:
    steps: int
    diverged: bool  # a non-finite or exploding loss stopped the run early
    train_seconds: float
    diverged_at_step: int | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    fused: bool = False  # trained in a fused group (workers/engine/plan.py)
    fusion: str | None = None  # with how many runs it was fused, or why it was not
    pruned_at_epoch: int | None = None  # a trial a pruning rule stopped at this rung


class Hooks:
    """No-op base: sinks override what they need."""

    def on_start(self, total_steps: int) -> None:
        """Before the first run: the steps all runs will take (for progress)."""

    def on_run_start(self, run: RunConfig, total_steps: int) -> None: ...

    def on_steps(self, run: RunConfig, steps: StepColumns) -> None: ...

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        """The steps of several runs flushed together (a group's flush), none empty.

        The engine calls this, never ``on_steps`` directly. By default each run's columns go
        to ``on_steps``; a sink that writes in batches overrides this instead."""
        for run, steps in batch:
            if len(steps):
                self.on_steps(run, steps)

    def on_epochs(self, run: RunConfig, epochs: Sequence[EpochRecord]) -> None: ...

    def on_run_end(self, run: RunConfig, result: RunResult) -> None: ...

    def on_runs_end(self, ends: Sequence[tuple[RunConfig, RunResult]]) -> None:
        """Several runs of a group ended at one moment (its last epoch, one flush): by
        default each to ``on_run_end``, in order; a sink that must wait for its writes
        overrides this to wait once for all of them."""
        for run, result in ends:
            self.on_run_end(run, result)

    def wants_checkpoint(self) -> bool:
        """Asked at each flush point: True takes a checkpoint now, whatever the schedule
        (a worker shutting down, workers/shutdown.py)."""
        return False

    def on_checkpoint(self, states: Sequence[tuple[RunConfig, RunState]]) -> None:
        """Runs' training states after their steps so far were handed to ``on_flush`` (and
        their epochs to ``on_epochs``). The tensors are live: copy or serialise them here."""


class CompositeHooks(Hooks):
    """Fan each call out to several hooks, in order."""

    def __init__(self, *hooks: Hooks) -> None:
        self.hooks = hooks

    def on_start(self, total_steps: int) -> None:
        for hook in self.hooks:
            hook.on_start(total_steps)

    def on_run_start(self, run: RunConfig, total_steps: int) -> None:
        for hook in self.hooks:
            hook.on_run_start(run, total_steps)

    def on_steps(self, run: RunConfig, steps: StepColumns) -> None:
        for hook in self.hooks:
            hook.on_steps(run, steps)

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        for hook in self.hooks:
            hook.on_flush(batch)

    def on_epochs(self, run: RunConfig, epochs: Sequence[EpochRecord]) -> None:
        for hook in self.hooks:
            hook.on_epochs(run, epochs)

    def on_run_end(self, run: RunConfig, result: RunResult) -> None:
        for hook in self.hooks:
            hook.on_run_end(run, result)

    def on_runs_end(self, ends: Sequence[tuple[RunConfig, RunResult]]) -> None:
        for hook in self.hooks:
            hook.on_runs_end(ends)

    def wants_checkpoint(self) -> bool:
        return any(hook.wants_checkpoint() for hook in self.hooks)

    def on_checkpoint(self, states: Sequence[tuple[RunConfig, RunState]]) -> None:
        for hook in self.hooks:
            hook.on_checkpoint(states)

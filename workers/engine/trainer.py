"""The one training loop: every group of members (one run alone, a fused group, landscape
points) trains through it, in the spirit of ignite's engine and minGPT's trainer.

The loop does only this: for every epoch and batch, one ``train_step`` (workers/engine/
step.py), then it emits events, and handlers (workers/engine/handlers.py) do the rest:

- ``STEP`` after every step (the step's values are ``trainer.values``);
- ``FLUSH`` every ``flush_every`` steps and at each epoch end (``at_epoch_end``), after the
  recorder handed the buffered steps to the hooks and ended the members that diverged or left;
- ``EPOCH_END`` after an epoch's flush;
- ``COMPLETED`` once the last epoch ended, for the members still training.

Members leave the group at any step (``end``: diverged, pruned, ...): from then on they are
not stepped, and at the next flush their steps up to that one are handed on and their run
ends (``Hooks.on_run_end``). The others go on; when none is left, the loop stops.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch

from workers.engine.config import RunConfig
from workers.engine.fused_layers import Act
from workers.engine.hooks import Hooks, RunResult
from workers.engine.members import Members
from workers.engine.optimizer_classes import has_modes
from workers.engine.problem import Batch
from workers.engine.recorder import Recorder
from workers.engine.step import Losses, Update, train_step


class Event(enum.Enum):
    STEP = "step"
    FLUSH = "flush"
    EPOCH_END = "epoch_end"
    COMPLETED = "completed"


class Source(Losses, Protocol):
    """What the loop needs of the problem beyond the step's losses."""

    def inputs(self, batch: Batch, seed_of: Sequence[int]) -> tuple[Act, torch.Tensor | None]: ...


Handler = Callable[["Trainer"], None]
Epochs = Iterator[tuple[int, Iterator[Batch]]]


class Trainer:
    """Trains ``members`` (member k is ``runs[k]``) over ``epochs`` and reports to ``hooks``."""

    def __init__(
        self,
        problem: Source,
        members: Members,
        runs: Sequence[RunConfig],
        updates: Sequence[Update],
        recorder: Recorder,
        hooks: Hooks,
        *,
        epochs: Epochs,
        steps_per_epoch: int,
        seed_of: Sequence[int],
        flush_every: int,
        note: str | None,
    ) -> None:
        self.problem, self.members, self.runs = problem, members, list(runs)
        self.updates, self.recorder, self.hooks = list(updates), recorder, hooks
        self._epochs, self.seed_of, self.flush_every = epochs, list(seed_of), flush_every
        self.steps_per_epoch = steps_per_epoch
        self.note = note  # with how many runs it was fused, or why it trained alone
        self.active = list(range(members.k))  # members still training
        self.leaving: dict[int, int] = {}  # members that left, not yet flushed: their last step
        self.diverged: dict[int, int] = {}
        self.pruned: dict[int, int] = {}  # member → the epoch (rung) a pruning rule stopped it
        self.results: dict[int, RunResult] = {}
        self.seconds = [0.0] * members.k
        self.step = self.epochs_done = self.epoch = 0
        self.values: torch.Tensor | None = None  # the last step's (K, fields)
        self.at_epoch_end = False  # during FLUSH: whether it is an epoch's last flush
        self._handlers: dict[Event, list[Handler]] = {event: [] for event in Event}

    def on(self, event: Event, handler: Handler) -> None:
        self._handlers[event].append(handler)

    def _emit(self, event: Event) -> None:
        for handler in self._handlers[event]:
            handler(self)

    def resume_at(self, step: int, epochs_done: int, seconds: Sequence[float]) -> None:
        """Go on after a checkpoint at ``step``, with ``epochs_done`` epochs ended."""
        self.step, self.epochs_done, self.seconds = step, epochs_done, list(seconds)

    def end(self, k: int) -> None:
        """Member k leaves the group after the current step: it is stepped no more, and its
        run ends at the next flush with the steps it trained so far."""
        if k in self.active:
            self.active.remove(k)
            self.leaving[k] = self.step

    def prune(self, k: int) -> None:
        """At an epoch end (its steps already flushed): member k's run ends now, pruned at
        this epoch, so that the checkpoint that may follow no longer holds it."""
        if k in self.active:
            self.active.remove(k)
            self.pruned[k] = self.epoch
            self.finish(k)

    def run(self) -> dict[int, RunResult]:
        """Train until the last epoch ends or no member is left; the runs' results by key.
        (The runs started when the group was built: ``Hooks.on_run_start``.)"""
        skip = self.step - self.epochs_done * self.steps_per_epoch
        self.members.train(True)
        for update in self.updates:  # schedule-free: training weights (a resumed state's
            if has_modes(update.optimizer):  # are its evaluation weights, as checkpointed)
                update.optimizer.train()  # type: ignore[attr-defined]
        for epoch, batches in self._epochs:
            if epoch <= self.epochs_done:
                continue  # trained before the checkpoint this group resumed from
            self.epoch = epoch
            for batch in itertools.islice(batches, skip, None):
                act, y = self.problem.inputs(batch, self.seed_of)
                lrs = [update.lr for update in self.updates]
                self.values, seconds = train_step(
                    self.problem, self.members, self.updates, self.active, act, y
                )
                for k, spent in seconds.items():
                    self.seconds[k] += spent
                self.step += 1
                samples = int(y.shape[-1]) if y is not None else 1
                self.recorder.add(self.step, epoch, samples, self.values, lrs, list(self.seconds))
                self._emit(Event.STEP)
                if len(self.recorder) >= self.flush_every or not self.active:
                    self.flush(epoch_end=False)
                if not self.active:
                    return self.results
            skip = 0
            self.flush(epoch_end=True)
            if not self.active:
                return self.results
            self._emit(Event.EPOCH_END)
            self.epochs_done = epoch
        self._emit(Event.COMPLETED)
        return self.results

    def flush(self, epoch_end: bool) -> None:
        """Hand the buffered steps to the hooks, end the members that diverged or left, then
        emit ``FLUSH`` (``at_epoch_end``: the flush that ends an epoch, before its
        ``EPOCH_END``; the others are the mid-epoch flush points)."""
        self.at_epoch_end = epoch_end
        through = {k: self.step for k in self.active} | self.leaving
        columns, diverged = self.recorder.drain(through)
        batch = [(self.runs[k], steps) for k, steps in columns.items() if len(steps)]
        if batch:
            self.hooks.on_flush(batch)
        for k, step in diverged.items():
            self.end(k)
            self.diverged[k] = step
        self.finish_all([(k, None, None) for k in sorted(self.leaving)])
        self.leaving.clear()
        self._emit(Event.FLUSH)

    def finish(
        self, k: int, test_loss: float | None = None, test_accuracy: float | None = None
    ) -> None:
        """Member k's run has ended: its result to the hooks."""
        self.finish_all([(k, test_loss, test_accuracy)])

    def finish_all(self, ends: Sequence[tuple[int, float | None, float | None]]) -> None:
        """Members' runs have ended at one moment, each ``(k, test_loss, test_accuracy)``:
        their results to the hooks in one call (``Hooks.on_runs_end``: the SQL sink waits
        once for all of them, one transaction, instead of once per run)."""
        handed = []
        for k, test_loss, test_accuracy in ends:
            if k in self.active:
                self.active.remove(k)
            result = RunResult(
                steps=self.recorder.last_step[k],
                diverged=k in self.diverged,
                train_seconds=self.seconds[k],
                diverged_at_step=self.diverged.get(k),
                test_loss=test_loss,
                test_accuracy=test_accuracy,
                fused=self.members.k > 1,
                fusion=self.note,
                pruned_at_epoch=self.pruned.get(k),
            )
            self.results[self.runs[k].key] = result
            handed.append((self.runs[k], result))
        if handed:
            self.hooks.on_runs_end(handed)

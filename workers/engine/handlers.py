"""What the loop leaves to handlers: evaluation, per-epoch schedules, checkpoints.

Each handler attaches itself to a ``Trainer``'s events (workers/engine/trainer.py) in
``attach``; the order of attaching is the order they run in at one event. The recorder and
the divergence check run inside the trainer's flush (every flush needs them, first); the
cancellation and shutdown checks are hooks (workers/cancellation.py, workers/shutdown.py)
that the flush reaches through ``Hooks.on_flush`` and ``Hooks.wants_checkpoint``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

from workers.engine import checkpoint
from workers.engine.checkpoint import CheckpointClock, RunState
from workers.engine.config import PruningConfig
from workers.engine.hooks import EpochRecord
from workers.engine.members import Members
from workers.engine.optimizer_classes import has_modes
from workers.engine.trainer import Event, Trainer


class Evaluates(Protocol):
    def evaluate(self, members: Members, name: str) -> tuple[list[float], list[float]] | None: ...

    def distances(self, members: Members) -> list[float | None] | None: ...

    has_score: bool


@contextlib.contextmanager
def eval_weights(trainer: Trainer) -> Iterator[None]:
    """Optimizers with train and eval modes (schedule-free) hold their evaluation weights
    for the block (``optimizer.eval()``), their training weights again after it
    (``optimizer.train()``): every evaluation and every checkpoint sees the weights the
    method means to be evaluated, and training steps the ones it trains at. Each member's
    optimizer swaps only its own parameters, so this holds in a fused group too."""
    switched = [update.optimizer for update in trainer.updates if has_modes(update.optimizer)]
    for optimizer in switched:
        optimizer.eval()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for optimizer in switched:
            optimizer.train()  # type: ignore[attr-defined]


class Evaluator:
    """Validation every ``every_steps`` steps (if set) and at each epoch end (the epoch's
    record), the test split once the last epoch ended (the run's result)."""

    def __init__(self, problem: Evaluates, every_steps: int | None) -> None:
        self.problem, self.every_steps = problem, every_steps
        self.val_losses: list[float] = []  # at the last epoch end, per member
        self.records: dict[int, EpochRecord] = {}  # at the last epoch end, per member

    def attach(self, trainer: Trainer) -> None:
        if self.every_steps:
            trainer.on(Event.STEP, self.mid_epoch)
        trainer.on(Event.EPOCH_END, self.epoch_end)
        trainer.on(Event.COMPLETED, self.completed)

    def mid_epoch(self, trainer: Trainer) -> None:
        if self.every_steps and trainer.step % self.every_steps == 0:
            with eval_weights(trainer):
                evaluated = self.problem.evaluate(trainer.members, "val")
            if evaluated is not None:
                trainer.recorder.add_evaluation(*evaluated)

    def epoch_end(self, trainer: Trainer) -> None:
        k_all = trainer.members.k
        with eval_weights(trainer):
            evaluated = self.problem.evaluate(trainer.members, "val")
            distances = self.problem.distances(trainer.members) or [None] * k_all
        losses, scores = evaluated if evaluated else ([float("nan")] * k_all,) * 2
        self.val_losses = losses
        for k in trainer.active:
            train_loss, train_score = trainer.recorder.epoch_means(k)
            record = EpochRecord(
                epoch=trainer.epoch,
                step=trainer.step,
                train_loss=train_loss,
                train_accuracy=train_score,
                val_loss=losses[k],
                val_accuracy=scores[k] if self.problem.has_score else None,
                train_seconds=trainer.seconds[k],
                distance=distances[k],
            )
            self.records[k] = record
            trainer.hooks.on_epochs(trainer.runs[k], [record])

    def completed(self, trainer: Trainer) -> None:
        # A study's trials never read the test split (it is for the reruns alone).
        wanted = any(not trainer.runs[k].trial for k in trainer.active)
        with eval_weights(trainer):
            test = self.problem.evaluate(trainer.members, "test") if wanted else None
        trainer.finish_all(
            [
                (k, None, None)
                if test is None or trainer.runs[k].trial
                else (k, test[0][k], test[1][k])
                for k in list(trainer.active)
            ]
        )


class Pruner:
    """At each rung's epoch end, after the ``Evaluator``'s records: per optimizer label, the
    trials still training that the rule names stop (``Trainer.prune``)."""

    def __init__(self, evaluator: Evaluator, config: PruningConfig) -> None:
        self.evaluator, self.config = evaluator, config

    def attach(self, trainer: Trainer) -> None:
        trainer.on(Event.EPOCH_END, self.epoch_end)

    def epoch_end(self, trainer: Trainer) -> None:
        if trainer.epoch not in self.config.rungs:
            return
        by_label: dict[str, dict[int, float | None]] = {}
        for k in trainer.active:
            run = trainer.runs[k]
            if run.trial and k in self.evaluator.records:
                value = getattr(self.evaluator.records[k], self.config.column)
                by_label.setdefault(run.optimizer.label, {})[k] = value
        for scores in by_label.values():
            stop = self.config.decide(scores, self.config.higher_is_better)
            for k in sorted(stop):
                trainer.prune(k)


class PlateauSchedules:
    """Schedules that step once per epoch, on the validation loss (``ReduceLROnPlateau``);
    after the ``Evaluator``'s epoch end, which measured it."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def attach(self, trainer: Trainer) -> None:
        if any(update.per_epoch for update in trainer.updates):
            trainer.on(Event.EPOCH_END, self.epoch_end)

    def epoch_end(self, trainer: Trainer) -> None:
        for k in trainer.active:
            update = trainer.updates[k]
            if update.per_epoch and update.scheduler is not None:
                update.scheduler.step(self.evaluator.val_losses[k])  # type: ignore[arg-type]


class Checkpointer:
    """Checkpoints of every active member, all at one step: when, the ``clock`` says (and
    any hook that asks, ``Hooks.wants_checkpoint``); where, the hooks (``on_checkpoint``).
    At a flush point mid-epoch and at epoch ends but the last (the run then ends)."""

    def __init__(self, clock: CheckpointClock, epochs: int) -> None:
        self.clock, self.epochs = clock, epochs

    def attach(self, trainer: Trainer) -> None:
        trainer.on(Event.FLUSH, self.after_flush)
        trainer.on(Event.EPOCH_END, self.epoch_end)

    def after_flush(self, trainer: Trainer) -> None:
        if trainer.at_epoch_end:
            return  # the epoch's end comes next: the checkpoint, if due, after it
        urgent = trainer.hooks.wants_checkpoint()
        if trainer.active and self.clock.due(trainer.step, epoch_end=False, urgent=urgent):
            self.save(trainer, epochs=trainer.epoch - 1)

    def epoch_end(self, trainer: Trainer) -> None:
        urgent = trainer.hooks.wants_checkpoint()
        if trainer.epoch < self.epochs and self.clock.due(
            trainer.step, epoch_end=True, urgent=urgent
        ):
            self.save(trainer, epochs=trainer.epoch)

    def save(self, trainer: Trainer, epochs: int) -> None:
        with eval_weights(trainer):  # the hooks copy the state before this returns
            self._save(trainer, epochs)

    def _save(self, trainer: Trainer, epochs: int) -> None:
        states = []
        rng = checkpoint.rng_state()
        for k in trainer.active:
            update = trainer.updates[k]
            state = {
                "model": trainer.members.state_dict(k),
                "optimizer": update.optimizer.state_dict(),
                "scheduler": update.scheduler.state_dict() if update.scheduler else None,
                "buffer": trainer.recorder.state(k),
                "seconds": trainer.seconds[k],
                "rng": rng,
            }
            layout = trainer.members.layout
            states.append((trainer.runs[k], RunState(trainer.step, epochs, layout, state)))
        trainer.hooks.on_checkpoint(states)
        self.clock.taken(trainer.step)

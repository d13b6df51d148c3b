"""A job's training: its problem loaded once, its runs planned into groups, each group built
into a trainer (workers/engine/trainer.py) and trained, under common random numbers.

For one seed every run starts from the same initial weights (a copy of one model built
after ``torch.manual_seed(seed)``) and sees the same mini-batches in the same order (one
``torch.Generator`` seeded with the seed draws each epoch's permutation), so the runs differ
only by their optimizer. ``gd`` takes one full-batch step per epoch instead.

The data live on the device as tensors and batches are index slices: on small models a
DataLoader's per-batch Python work costs more than the step itself.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from workers.engine import checkpoint, fused_layers, fused_net, models
from workers.engine.checkpoint import CheckpointClock, RunState
from workers.engine.config import JobConfig, RunConfig
from workers.engine.datasets import Splits
from workers.engine.handlers import Checkpointer, Evaluator, PlateauSchedules, Pruner
from workers.engine.hooks import Hooks, RunResult
from workers.engine.landscapes import LANDSCAPES, LandscapeProblem
from workers.engine.members import FusedMembers, Members, ModuleMember, PointMembers, point_start
from workers.engine.plan import RunGroup, plan
from workers.engine.problem import Batch, Problem
from workers.engine.recorder import Recorder
from workers.engine.step import Update
from workers.engine.trainer import Trainer

PROBE_SAMPLES = 4  # inputs the fused forward is checked on before a group trains


class Experiment:
    """A job's problem, loaded once, and the training of its runs."""

    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self.problem: Problem | LandscapeProblem
        if config.dataset.name in LANDSCAPES.names():
            self.problem = LandscapeProblem(config)
            self.landscape: LandscapeProblem | None = self.problem
        else:
            self.problem, self.landscape = Problem(config), None

    @property
    def data(self) -> Splits:
        """The splits on the device (not for a landscape, which has none)."""
        assert isinstance(self.problem, Problem), "a landscape has no data set"
        return self.problem.data

    @property
    def n_train(self) -> int:
        return self.data.y_train.shape[0]

    @property
    def classification(self) -> bool:
        return self.problem.classification

    @property
    def dtype(self) -> torch.dtype:
        return self.problem.dtype

    def steps_per_epoch(self, run: RunConfig) -> int:
        return self.problem.steps_per_epoch(run.optimizer.full_batch)

    def total_steps(self, run: RunConfig) -> int:
        return self.config.epochs * self.steps_per_epoch(run)

    def initial_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = models.build(self.config.model, self.data.input_shape, self.data.n_outputs)
        return model.to(self.config.device, self.dtype)

    @functools.cached_property
    def fusion_blocker(self) -> str | None:
        """Why no run of this job can fuse (fusion off, the model, ...), or None."""
        if self.config.fuse == "never":
            return "fusion is turned off for this job"
        if self.landscape:
            return None
        model = self.initial_model(0)
        try:
            fused_net.fuse([model, copy.deepcopy(model)], self._probe)
        except fused_layers.NotFusable as error:
            return f"the model cannot fuse: {error}"
        return None

    @functools.cached_property
    def activations_per_sample(self) -> int:
        """Activation values one sample produces in the model (for fusion's memory estimate)."""
        return fused_net.activation_elements(self.initial_model(0), self._probe)

    @property
    def _probe(self) -> torch.Tensor:
        return self.data.x_train[:PROBE_SAMPLES]

    def _member_bytes(self, full_batch: bool) -> int | None:
        """Activation bytes of one member's step, where they limit a group (on a CPU)."""
        config = self.config
        if config.fuse == "always" or self.landscape or not config.device.startswith("cpu"):
            return None
        batch = self.n_train if full_batch else min(config.batch_size, self.n_train)
        return batch * self.activations_per_sample * (torch.finfo(self.dtype).bits // 8)

    def groups(self, keys: Collection[int] | None = None) -> list[RunGroup]:
        """How the runs (or those whose key is in ``keys``) will train: fused groups, and runs
        that train alone, with why (workers/engine/plan.py decides)."""
        runs = [run for run in self.config.runs if keys is None or run.key in keys]
        return plan(
            runs, self.fusion_blocker, self._member_bytes, one_schedule=bool(self.landscape)
        )

    def layout(self, group: RunGroup) -> str:
        if self.landscape:
            return checkpoint.POINT
        return checkpoint.FUSED if group.fused else checkpoint.ALONE

    def resumable(
        self, states: Mapping[int, RunState], keys: Collection[int] | None = None
    ) -> dict[int, RunState]:
        """The states the runs (or those in ``keys``) can resume from as they will train now:
        a group when every member has a checkpoint of its layout, all of one step. The others
        start again from their first step."""
        usable: dict[int, RunState] = {}
        for group in self.groups(keys):
            found = [states.get(run.key) for run in group.runs]
            layout = self.layout(group)
            if all(state is not None and state.layout == layout for state in found) and (
                len({state.step for state in found if state is not None}) == 1
            ):
                usable.update(
                    (run.key, state)
                    for run, state in zip(group.runs, found, strict=True)
                    if state is not None
                )
        return usable

    def run_all(
        self,
        hooks: Hooks,
        keys: Collection[int] | None = None,
        resume: Mapping[int, RunState] | None = None,
    ) -> dict[int, RunResult]:
        """Train every run (or those whose key is in ``keys``), group by group. A run with a
        state in ``resume`` goes on from it (the caller checked it fits: ``resumable``)."""
        groups = self.groups(keys)
        resume = resume or {}
        remaining = sum(
            self.total_steps(run) - (resume[run.key].step if run.key in resume else 0)
            for group in groups
            for run in group.runs
        )
        hooks.on_start(remaining)
        results: dict[int, RunResult] = {}
        initial: dict[int, nn.Module] = {}
        for group in groups:
            if not self.landscape:
                for seed in {run.seed for run in group.runs} - initial.keys():
                    initial[seed] = self.initial_model(seed)
            results.update(self.trainer(group, hooks, initial, resume).run())
        return results

    def trainer(
        self,
        group: RunGroup,
        hooks: Hooks,
        initial: Mapping[int, nn.Module],
        resume: Mapping[int, RunState],
    ) -> Trainer:
        """The group's trainer with its handlers, at its checkpoint if it resumes."""
        runs, config = group.runs, self.config
        total = self.total_steps(runs[0])  # one batch schedule for the group
        for run in runs:  # started before anything can fail: a failure is the run's own
            hooks.on_run_start(run, total)
        states = [resume.get(run.key) for run in runs]  # all members, or none (resumable)
        members = self._members(group, initial, states)
        seeds = list(dict.fromkeys(run.seed for run in runs))
        full_batch = runs[0].optimizer.full_batch
        recorder = Recorder(members.k, self.problem.has_score, config.divergence_ratio)
        trainer = Trainer(
            self.problem,
            members,
            runs,
            [Update.build(run, members, k, total) for k, run in enumerate(runs)],
            recorder,
            hooks,
            epochs=_zip_epochs([self.problem.batches(seed, full_batch) for seed in seeds]),
            steps_per_epoch=self.steps_per_epoch(runs[0]),
            seed_of=[seeds.index(run.seed) for run in runs],
            flush_every=config.flush_every,
            note=_note(group),
        )
        torch.manual_seed(runs[0].seed)  # dropout's stream: the same in every run of a seed
        step = 0
        if states[0] is not None:
            for k, state in enumerate(states):
                _load(trainer, k, state.state)  # type: ignore[union-attr]
            checkpoint.set_rng_state(states[0].state["rng"])
            step = states[0].step
            trainer.resume_at(step, states[0].epochs, [s.state["seconds"] for s in states])  # type: ignore[union-attr]
        evaluator = Evaluator(self.problem, config.eval_every_steps)
        clock = CheckpointClock(config.checkpoint_every_steps, config.checkpoint_min_seconds, step)
        handlers: list[Any] = [evaluator, PlateauSchedules(evaluator)]
        if config.pruning is not None:  # after the evaluator's records, before the checkpoint
            handlers.append(Pruner(evaluator, config.pruning))
        handlers.append(Checkpointer(clock, config.epochs))
        for handler in handlers:
            handler.attach(trainer)
        return trainer

    def _members(
        self,
        group: RunGroup,
        initial: Mapping[int, nn.Module],
        states: Sequence[RunState | None],
    ) -> Members:
        saved = [state.state["model"] if state else None for state in states]  # model states
        if isinstance(self.problem, LandscapeProblem):
            starts = [point_start(model, self.problem.start) for model in saved]
            return PointMembers(self.problem.function, starts)
        modules = [copy.deepcopy(initial[run.seed]) for run in group.runs]
        for module, model in zip(modules, saved, strict=True):
            if model is not None:
                module.load_state_dict(model)
        if group.fused:
            return FusedMembers(modules, self._probe)
        (module,) = modules
        return ModuleMember(module)


def _load(trainer: Trainer, k: int, state: dict[str, object]) -> None:
    update = trainer.updates[k]
    update.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
    if update.scheduler is not None:
        update.scheduler.load_state_dict(state["scheduler"])  # type: ignore[arg-type]
    trainer.recorder.load_state(k, state["buffer"])  # type: ignore[arg-type]


def _zip_epochs(
    streams: Sequence[Iterator[tuple[int, Sequence[torch.Tensor | None]]]],
) -> Iterator[tuple[int, Iterator[Batch]]]:
    """Per epoch, an iterator over its steps: each distinct seed's batch indices."""
    for epochs in zip(*streams, strict=True):
        yield epochs[0][0], zip(*(parts for _, parts in epochs), strict=True)


def _note(group: RunGroup) -> str | None:
    if not group.fused:
        return group.reason
    others = len(group.runs) - 1
    return f"fused with {others} other run{'s' if others > 1 else ''}"

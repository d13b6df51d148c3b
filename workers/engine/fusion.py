"""Fused training: the runs of a job that share data, model and batch schedule train as one.

A comparison trains one model many times (optimizers x seeds). Trained one after another,
small models leave most of the machine idle: each step is a few small kernels and a lot of
Python. A fused group of K runs does one forward/backward for all K (fused_layers.py: one
wide multiply or grouped convolution per layer), then each run's own ``torch.optim``
optimizer (any class, any hyperparameters, its own schedule) updates its row of the shared
parameter matrix in place. Members may have different seeds: each then gets its own initial
weights and its own batch order (the inputs are gathered per member).

Fused and unfused runs of one spec compute the same numbers up to floating-point rounding
(the same sums, in another order): in float64 their losses agree to ~1e-12 over whole runs.

What does not fuse trains alone, and says why (``RunGroup.reason``): LBFGS (its closure
re-evaluates the loss several times per step), models with dropout or a layer without a fused
form, landscapes, a run whose batch schedule no other run shares (``gd`` among mini-batch
runs), and jobs that turn fusion off (``"execution": {"fuse": false}``).

Time: a member's ``train_seconds`` is an equal share of the group's forward/backward plus
its own optimizer step, so per-optimizer costs stay visible.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from workers.engine import checkpoint, fused_layers, optimizers, schedules
from workers.engine.buffer import Divergence, GroupBuffer, StepBuffer
from workers.engine.checkpoint import RunState
from workers.engine.config import EVAL_CHUNK, RunConfig
from workers.engine.hooks import EpochRecord, Hooks, RunResult, StepRecord

if TYPE_CHECKING:
    from workers.engine.loop import Experiment

PROBE_SAMPLES = 4  # inputs the fused forward is checked on before a group trains

# On a CPU a fused group pays while its activations stay near the caches; beyond, every
# element-wise layer streams K members' activations through memory and runs slower than K
# cache-resident runs. Measured on a 2-core EPYC VM (torch 2.13, 1 thread, 7 lecture
# optimizers): digits MLP, 0.6 MB of activations per fused step, 1.83x faster fused; an
# MNIST-sized MLP (784-256-10, batch 128), 4.7 MB, 1.03x; LeNet-5 (batch 128), 53 MB, 0.83x.
CPU_FUSED_ACTIVATION_BYTES = 16 * 2**20

# Update rules that treat every element on its own, so a run's parameters can be one flat
# tensor (one kernel per step). Others (Adafactor factors matrices) get one view per tensor.
ELEMENTWISE = frozenset(
    {"SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad", "Adadelta", "RMSprop"}
    | {"Rprop", "ASGD"}
)


@dataclass(frozen=True)
class RunGroup:
    """Runs that train together: one fused group, or one run alone (``reason`` says why)."""

    runs: tuple[RunConfig, ...]
    fused: bool
    reason: str | None = None


def plan(experiment: Experiment, runs: Sequence[RunConfig]) -> list[RunGroup]:
    """Fused groups of the runs that can share a forward/backward; every other run alone."""
    alone = experiment.fusion_blocker
    if alone:
        return [RunGroup((run,), fused=False, reason=alone) for run in runs]
    groups: list[RunGroup] = []
    by_schedule: dict[bool, list[RunConfig]] = {}
    for run in runs:
        if optimizers.needs_closure_class(run.optimizer.torch_class):
            reason = f"{run.optimizer.torch_class} re-evaluates the loss through a closure"
            groups.append(RunGroup((run,), fused=False, reason=reason))
        else:
            by_schedule.setdefault(run.optimizer.full_batch, []).append(run)
    for full_batch, members in by_schedule.items():
        too_big = _activations_too_big(experiment, len(members), full_batch)
        if len(members) > 1 and too_big:
            groups += [RunGroup((run,), fused=False, reason=too_big) for run in members]
        elif len(members) > 1:
            groups.append(RunGroup(tuple(members), fused=True))
        else:
            schedule = "full-batch" if full_batch else "mini-batch"
            reason = f"no other run of this part shares its {schedule} schedule"
            groups.append(RunGroup(tuple(members), fused=False, reason=reason))
    order = {run.key: index for index, run in enumerate(runs)}
    return sorted(groups, key=lambda group: order[group.runs[0].key])


def _activations_too_big(experiment: Experiment, k: int, full_batch: bool) -> str | None:
    """Why a group of k members would run slower fused on this CPU, or None."""
    if experiment.config.fuse == "always" or not experiment.config.device.startswith("cpu"):
        return None
    batch = (
        experiment.n_train if full_batch else min(experiment.config.batch_size, experiment.n_train)
    )
    element = torch.finfo(experiment.dtype).bits // 8
    size = k * batch * experiment.activations_per_sample * element
    if size <= CPU_FUSED_ACTIVATION_BYTES:
        return None
    return (
        f"on a CPU, {k} runs' activations ({size / 2**20:.0f} MiB per step) would run slower "
        f"fused than one by one (the limit is {CPU_FUSED_ACTIVATION_BYTES // 2**20} MiB)"
    )


def why_no_fusion(experiment: Experiment) -> str | None:
    """Why no run of this job can fuse, or None."""
    if experiment.config.fuse == "never":
        return "fusion is turned off for this job"
    if experiment.landscape:
        return "a landscape run trains one point on its own"
    model = experiment.initial_model(0)
    try:
        fused_layers.fuse([model, copy.deepcopy(model)], experiment.data.x_train[:PROBE_SAMPLES])
    except fused_layers.NotFusable as error:
        return f"the model cannot fuse: {error}"
    return None


class FusedGroup:
    """K runs trained as one: shared forward/backward, one optimizer per run."""

    def __init__(
        self,
        experiment: Experiment,
        runs: Sequence[RunConfig],
        initial: Mapping[int, nn.Module],
        resume: Mapping[int, RunState] | None = None,
    ) -> None:
        """``resume``: the members' checkpoints, all of one step (``Experiment.resumable``)
        to go on from; members without one start from their initial weights."""
        self.experiment, self.runs = experiment, list(runs)
        self.k = len(runs)
        states = [(resume or {}).get(run.key) for run in runs]
        members = [copy.deepcopy(initial[run.seed]) for run in runs]
        for member, state in zip(members, states, strict=True):
            if state is not None:
                member.load_state_dict(state.state["model"])
        self.net = fused_layers.fuse(members, experiment.data.x_train[:PROBE_SAMPLES])
        self.total = experiment.total_steps(runs[0])  # one batch schedule for the group
        bank = self.net.bank
        self.optimizers = [
            optimizers.build(
                run.optimizer,
                bank.member_parameters(k, flat=run.optimizer.torch_class in ELEMENTWISE),
            )
            for k, run in enumerate(runs)
        ]
        self.schedulers = [
            schedules.build(run.optimizer.schedule, optimizer, self.total)
            for run, optimizer in zip(runs, self.optimizers, strict=True)
        ]
        self.buffer = GroupBuffer(
            [StepBuffer(Divergence(experiment.config.divergence_ratio)) for _ in runs]
        )
        self.seconds = [0.0] * self.k
        self.active = list(range(self.k))  # members still training (not diverged)
        self.results: dict[int, RunResult] = {}
        seeds = list(dict.fromkeys(run.seed for run in runs))
        self.seed_of = [seeds.index(run.seed) for run in runs]
        self.first_of_seed = [next(run for run in runs if run.seed == seed) for seed in seeds]
        self.note = f"fused with {self.k - 1} other run{'s' if self.k > 2 else ''}"
        self.step = self.epochs_done = 0
        if states[0] is not None:  # all members, or none (Experiment.resumable)
            self.step, self.epochs_done = states[0].step, states[0].epochs
            for k, state in enumerate(states):
                self._load(k, state.state)  # type: ignore[union-attr]
        self.clock = experiment.checkpoint_clock(self.step)

    def _load(self, k: int, state: dict[str, Any]) -> None:
        self.optimizers[k].load_state_dict(state["optimizer"])
        scheduler = self.schedulers[k]
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        self.buffer.members[k].load_state(state["buffer"])
        self.seconds[k] = state["seconds"]

    def _save(self, hooks: Hooks, epochs: int) -> None:
        """A checkpoint of every active member (all at this step)."""
        states = []
        for k in self.active:
            scheduler = self.schedulers[k]
            state = {
                "model": self.net.member_state_dict(k),
                "optimizer": self.optimizers[k].state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "buffer": self.buffer.members[k].state(),
                "seconds": self.seconds[k],
                "rng": checkpoint.rng_state(),
            }
            states.append((self.runs[k], RunState(self.step, epochs, checkpoint.FUSED, state)))
        hooks.on_checkpoint(states)
        self.clock.taken(self.step)

    # --- inputs ---

    def _epochs(self) -> Iterator[tuple[int, Iterator[tuple[torch.Tensor | None, ...]]]]:
        """Per epoch, an iterator over the steps: each distinct seed's batch indices (None:
        the whole training split). Members of one seed share their batches."""
        streams = [self.experiment.batches(run) for run in self.first_of_seed]
        for epochs in zip(*streams, strict=True):
            yield epochs[0][0], zip(*(parts for _, parts in epochs), strict=True)

    def _inputs(
        self, indices: tuple[torch.Tensor | None, ...]
    ) -> tuple[fused_layers.Act, torch.Tensor]:
        data = self.experiment.data
        if indices[0] is None:  # full batch: the same for every seed
            return (data.x_train, fused_layers.SHARED), data.y_train
        if len(indices) == 1:
            index = indices[0]
            return (data.x_train[index], fused_layers.SHARED), data.y_train[index]
        index = torch.stack([indices[s] for s in self.seed_of])  # type: ignore[misc]
        return (data.x_train[index], fused_layers.STACKED), data.y_train[index]

    # --- training ---

    def train(self, hooks: Hooks) -> dict[int, RunResult]:
        experiment, config = self.experiment, self.experiment.config
        data, net, bank = experiment.data, self.net, self.net.bank
        for run in self.runs:
            hooks.on_run_start(run, self.total)
        step = self.step
        skip = self.step - self.epochs_done * experiment.steps_per_epoch(self.runs[0])
        net.train()
        for epoch, steps in self._epochs():
            if epoch <= self.epochs_done:
                continue  # trained before the checkpoint the group resumed from
            for indices in itertools.islice(steps, skip, None):
                act, y = self._inputs(indices)
                started = time.perf_counter()
                bank.zero_grad()
                with experiment._autocast():
                    losses, scores = experiment.member_losses(net(act), y)
                losses.sum().backward()  # each member's gradient is its own loss's
                values = torch.stack(
                    [losses.detach(), scores.to(losses.dtype), bank.grad_norms().to(losses.dtype)],
                    dim=1,
                )
                shared = (time.perf_counter() - started) / len(self.active)
                lrs = [float(o.param_groups[0]["lr"]) for o in self.optimizers]
                for k in self.active:
                    began = time.perf_counter()
                    self.optimizers[k].step()
                    scheduler = self.schedulers[k]
                    if scheduler is not None and not schedules.steps_per_epoch_only(scheduler):
                        scheduler.step()
                    self.seconds[k] += shared + time.perf_counter() - began
                step = self.step = step + 1
                self.buffer.add(step, epoch, values, lrs, self.seconds, len(y), self.active)
                if config.eval_every_steps and step % config.eval_every_steps == 0:
                    val_losses, val_scores = self.evaluate(data.x_val, data.y_val)
                    for k in self.active:
                        self.buffer.members[k].add_evaluation(val_losses[k], val_scores[k])
                if len(self.buffer) >= config.flush_every:
                    self._flush(hooks)
                    urgent = hooks.wants_checkpoint()
                    if self.active and self.clock.due(step, epoch_end=False, urgent=urgent):
                        self._save(hooks, epoch - 1)
                if not self.active:
                    return self.results
            skip = 0
            self._flush(hooks)
            if not self.active:
                return self.results
            self._end_epoch(hooks, epoch, step)
            urgent = hooks.wants_checkpoint()
            if epoch < config.epochs and self.clock.due(step, epoch_end=True, urgent=urgent):
                self._save(hooks, epoch)
        test = self.evaluate(data.x_test, data.y_test) if len(data.y_test) else None
        for k in list(self.active):
            self._end(hooks, k, *(test[0][k], test[1][k]) if test else (None, None))
        return self.results

    def _flush(self, hooks: Hooks) -> None:
        """Hand every member's buffered steps to the hooks; end the members that diverged."""
        records = self.buffer.drain(self.active, with_accuracy=self.experiment.classification)
        batch: list[tuple[RunConfig, list[StepRecord]]] = [
            (self.runs[k], steps) for k, steps in records.items() if steps
        ]
        if batch:
            hooks.on_flush(batch)
        for k in list(self.active):
            if self.buffer.members[k].diverged_at is not None:
                self._end(hooks, k)

    def _end_epoch(self, hooks: Hooks, epoch: int, step: int) -> None:
        data = self.experiment.data
        val_losses, val_scores = self.evaluate(data.x_val, data.y_val)
        for k in self.active:
            train_loss, train_score = self.buffer.members[k].epoch_means()
            record = EpochRecord(
                epoch, step, train_loss, train_score, val_losses[k], val_scores[k], self.seconds[k]
            )
            hooks.on_epochs(self.runs[k], [record])
            scheduler = self.schedulers[k]
            if scheduler is not None and schedules.steps_per_epoch_only(scheduler):
                scheduler.step(val_losses[k])  # type: ignore[arg-type]

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
        """Every member's mean loss and score (accuracy or R²) over a whole split."""
        self.net.eval()
        with self.experiment._autocast():
            outputs = torch.cat(
                [self.net((chunk, fused_layers.SHARED)) for chunk in x.split(EVAL_CHUNK)], dim=1
            )
        self.net.train()
        losses, scores = self.experiment.member_losses(outputs, y)
        return losses.tolist(), (scores.to(losses.dtype) / len(y)).tolist()

    def _end(
        self,
        hooks: Hooks,
        k: int,
        test_loss: float | None = None,
        test_accuracy: float | None = None,
    ) -> None:
        buffer = self.buffer.members[k]
        result = RunResult(
            steps=buffer.last_step,
            diverged=buffer.diverged_at is not None,
            train_seconds=self.seconds[k],
            diverged_at_step=buffer.diverged_at,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            fused=True,
            fusion=self.note,
        )
        self.active.remove(k)
        self.results[self.runs[k].key] = result
        hooks.on_run_end(self.runs[k], result)

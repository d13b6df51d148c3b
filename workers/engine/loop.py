"""The training loop: one run per optimizer entry and seed, under common random numbers.

For one seed every run starts from the same initial weights (a copy of one model built
after ``torch.manual_seed(seed)``) and sees the same mini-batches in the same order (one
``torch.Generator`` seeded with the seed draws each epoch's permutation), so the runs differ
only by their optimizer. ``gd`` takes one full-batch step per epoch instead.

The data live on the device as tensors and batches are index slices: on small models a
DataLoader's per-batch Python work costs more than the step itself. Landscapes (2-D test
functions) train in workers/engine/landscapes.py.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
from collections.abc import Collection, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from workers.engine import (
    checkpoint,
    datasets,
    fused_layers,
    fusion,
    landscapes,
    models,
    optimizers,
    schedules,
)
from workers.engine.buffer import Divergence, StepBuffer
from workers.engine.checkpoint import CheckpointClock, RunState
from workers.engine.config import EVAL_CHUNK, JobConfig, RunConfig
from workers.engine.hooks import EpochRecord, Hooks, RunResult


class Experiment:
    """A job's data, loaded once, and the training of its runs."""

    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self.landscape: landscapes.LandscapeRun | None = None
        if config.dataset.name in landscapes.LANDSCAPES.names():
            self.landscape = landscapes.LandscapeRun(config)
            return
        self.dtype = getattr(torch, config.dtype)
        self.data = datasets.load(config.dataset).to(config.device, self.dtype)
        self.n_train = int(self.data.y_train.shape[0])
        self.classification = self.data.task == "classification"

    def steps_per_epoch(self, run: RunConfig) -> int:
        if self.landscape or run.optimizer.full_batch:
            return 1
        batches = math.ceil(self.n_train / self.config.batch_size)
        # A trailing batch of one sample joins the one before (batch norm needs two).
        return (
            batches - 1 if batches > 1 and self.n_train % self.config.batch_size == 1 else batches
        )

    def total_steps(self, run: RunConfig) -> int:
        return self.config.epochs * self.steps_per_epoch(run)

    def initial_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = models.build(self.config.model, self.data.input_shape, self.data.n_outputs)
        return model.to(self.config.device, self.dtype)

    def batches(self, run: RunConfig) -> Iterator[tuple[int, list[torch.Tensor | None]]]:
        """(epoch, batch indices) for every epoch; ``None`` means the whole training split."""
        generator = torch.Generator().manual_seed(run.seed)
        for epoch in range(1, self.config.epochs + 1):
            if run.optimizer.full_batch:
                yield epoch, [None]
                continue
            order = torch.randperm(self.n_train, generator=generator).to(self.config.device)
            parts = list(order.split(self.config.batch_size))
            if len(parts) > self.steps_per_epoch(run):
                parts[-2:] = [torch.cat(parts[-2:])]
            yield epoch, list(parts)

    @functools.cached_property
    def fusion_blocker(self) -> str | None:
        """Why no run of this job can fuse (fusion off, the model, ...), or None."""
        return fusion.why_no_fusion(self)

    @functools.cached_property
    def activations_per_sample(self) -> int:
        """Activation values one sample produces in the model (for fusion's memory estimate)."""
        return fused_layers.activation_elements(self.initial_model(0), self.data.x_train[:4])

    def groups(self, keys: Collection[int] | None = None) -> list[fusion.RunGroup]:
        """How the runs (or those whose key is in ``keys``) will train: fused groups, and runs
        that train alone, with why (workers/engine/fusion.py decides)."""
        runs = [run for run in self.config.runs if keys is None or run.key in keys]
        return fusion.plan(self, runs)

    def run_all(
        self,
        hooks: Hooks,
        keys: Collection[int] | None = None,
        resume: Mapping[int, RunState] | None = None,
    ) -> dict[int, RunResult]:
        """Train every run (or those whose key is in ``keys``), group by group; runs of one
        seed start from the same initial weights. A run with a state in ``resume`` goes on
        from it (the caller checked it fits: ``resumable``)."""
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
            if self.landscape:
                (run,) = group.runs
                results[run.key] = self.landscape.train(run, hooks)
                continue
            for seed in {run.seed for run in group.runs} - initial.keys():
                initial[seed] = self.initial_model(seed)
            if group.fused:
                trainer = fusion.FusedGroup(self, group.runs, initial, resume)
                results.update(trainer.train(hooks))
                continue
            (run,) = group.runs
            model = copy.deepcopy(initial[run.seed])
            results[run.key] = self.train(run, model, hooks, group.reason, resume.get(run.key))
        return results

    def resumable(
        self, states: Mapping[int, RunState], keys: Collection[int] | None = None
    ) -> dict[int, RunState]:
        """The states the runs (or those in ``keys``) can resume from as they will train now:
        an alone run from an alone checkpoint; a fused group when every member has a fused
        checkpoint of one step. The others start again from their first step."""
        usable: dict[int, RunState] = {}
        for group in self.groups(keys):
            if self.landscape:
                continue  # a landscape is a few hundred 2-D steps: it starts again
            found = [states.get(run.key) for run in group.runs]
            layout = checkpoint.FUSED if group.fused else checkpoint.ALONE
            if all(state is not None and state.layout == layout for state in found) and (
                len({state.step for state in found if state is not None}) == 1
            ):
                usable.update(
                    (run.key, state)
                    for run, state in zip(group.runs, found, strict=True)
                    if state is not None
                )
        return usable

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if not self.config.mixed_precision:
            return contextlib.nullcontext()
        device_type = "cuda" if self.config.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)

    def _loss_and_score(
        self, output: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss, and the score summed over the batch: correct predictions, or R² x batch size."""
        output = _upcast(output)
        if self.classification:
            return F.cross_entropy(output, y), (output.argmax(dim=1) == y).sum()
        prediction = output.squeeze(-1)
        return F.mse_loss(prediction, y), _r2(prediction, y) * len(y)

    def member_losses(
        self, outputs: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``_loss_and_score`` of each member of a fused group: outputs (K, B, outputs), targets
        (B,) shared or (K, B); each result (K,)."""
        outputs = _upcast(outputs)
        k, b = outputs.shape[:2]
        y = y.expand(k, b)
        if self.classification:
            losses = F.cross_entropy(
                outputs.reshape(k * b, -1), y.reshape(-1), reduction="none"
            ).view(k, b)
            return losses.mean(dim=1), (outputs.argmax(dim=2) == y).sum(dim=1)
        prediction = outputs.squeeze(-1)
        losses = ((prediction - y) ** 2).mean(dim=1)
        return losses, _r2(prediction, y, dim=1) * b

    def _forward_backward(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss, score = self._loss_and_score(model(x), y)
        loss.backward()
        return loss, score

    def _closure(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """LBFGS's closure: re-evaluate the batch at the current weights."""
        return self._forward_backward(model, optimizer, x, y)[0]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean loss and score (accuracy or R²) over a whole split, in eval mode."""
        model.eval()
        with self._autocast():
            outputs = torch.cat([_upcast(model(chunk)) for chunk in x.split(EVAL_CHUNK)])
        model.train()
        loss, score = self._loss_and_score(outputs, y)
        return loss.item(), score.item() / len(y)

    def checkpoint_clock(self, step: int) -> CheckpointClock:
        return CheckpointClock(
            self.config.checkpoint_every_steps, self.config.checkpoint_min_seconds, step
        )

    def train(
        self,
        run: RunConfig,
        model: nn.Module,
        hooks: Hooks,
        alone_because: str | None = None,
        resume: RunState | None = None,
    ) -> RunResult:
        """Train one run on its own; ``alone_because``: why it was not fused (recorded);
        ``resume``: a checkpoint of this run to go on from."""
        total = self.total_steps(run)
        hooks.on_run_start(run, total)
        torch.manual_seed(run.seed)  # the same stream for dropout in every run of this seed
        optimizer = optimizers.build(run.optimizer, model.parameters())
        scheduler = schedules.build(run.optimizer.schedule, optimizer, total)
        per_epoch_schedule = schedules.steps_per_epoch_only(scheduler)
        data, eval_every = self.data, self.config.eval_every_steps
        buffer = StepBuffer(Divergence(self.config.divergence_ratio))
        step, train_seconds = 0, 0.0
        if resume is not None:
            state = resume.state
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            buffer.load_state(state["buffer"])
            checkpoint.set_rng_state(state["rng"])
            step, train_seconds = resume.step, state["seconds"]
        clock = self.checkpoint_clock(step)
        epochs_done, skip = checkpoint.epochs_to_skip(resume, self.steps_per_epoch(run))

        def flush() -> bool:
            records = buffer.drain(with_accuracy=True)
            if records:
                hooks.on_flush([(run, records)])
            return buffer.diverged_at is None

        def save(epochs: int) -> None:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "buffer": buffer.state(),
                "seconds": train_seconds,
                "rng": checkpoint.rng_state(),
            }
            hooks.on_checkpoint([(run, RunState(step, epochs, checkpoint.ALONE, state))])
            clock.taken(step)

        model.train()
        for epoch, epoch_batches in self.batches(run):
            if epoch <= epochs_done:
                continue  # trained before the checkpoint this run resumed from
            for index in epoch_batches[skip:]:
                x = data.x_train if index is None else data.x_train[index]
                y = data.y_train if index is None else data.y_train[index]
                started = time.perf_counter()
                lr = float(optimizer.param_groups[0]["lr"])  # the rate this step uses
                loss, score = self._forward_backward(model, optimizer, x, y)
                grad_norm = _grad_norm(model)
                if optimizers.needs_closure(optimizer):
                    optimizer.step(functools.partial(self._closure, model, optimizer, x, y))  # type: ignore[arg-type]
                else:
                    optimizer.step()
                if scheduler is not None and not per_epoch_schedule:
                    scheduler.step()
                train_seconds += time.perf_counter() - started
                step += 1
                values = torch.stack(
                    [loss.detach(), score.to(loss.dtype), grad_norm.to(loss.dtype)]
                )
                buffer.add(step, epoch, values, lr, train_seconds, len(y))
                if eval_every and step % eval_every == 0:
                    buffer.add_evaluation(*self.evaluate(model, data.x_val, data.y_val))
                if len(buffer) >= self.config.flush_every:
                    if not flush():
                        return self._end(run, hooks, buffer, train_seconds, fusion=alone_because)
                    if clock.due(step, epoch_end=False, urgent=hooks.wants_checkpoint()):
                        save(epoch - 1)
            skip = 0
            if not flush():
                return self._end(run, hooks, buffer, train_seconds, fusion=alone_because)
            val_loss, val_score = self.evaluate(model, data.x_val, data.y_val)
            train_loss, train_score = buffer.epoch_means()
            hooks.on_epochs(
                run,
                [
                    EpochRecord(
                        epoch, step, train_loss, train_score, val_loss, val_score, train_seconds
                    )
                ],
            )
            if per_epoch_schedule:
                scheduler.step(val_loss)  # type: ignore[union-attr, arg-type]
            urgent = hooks.wants_checkpoint()
            if epoch < self.config.epochs and clock.due(step, epoch_end=True, urgent=urgent):
                save(epoch)
        test_loss, test_score = (
            self.evaluate(model, data.x_test, data.y_test) if len(data.y_test) else (None, None)
        )
        return self._end(
            run, hooks, buffer, train_seconds, test_loss, test_score, fusion=alone_because
        )

    def _end(
        self,
        run: RunConfig,
        hooks: Hooks,
        buffer: StepBuffer,
        train_seconds: float,
        test_loss: float | None = None,
        test_accuracy: float | None = None,
        *,
        fused: bool = False,
        fusion: str | None = None,
    ) -> RunResult:
        result = RunResult(
            steps=buffer.last_step,
            diverged=buffer.diverged_at is not None,
            train_seconds=train_seconds,
            diverged_at_step=buffer.diverged_at,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            fused=fused,
            fusion=fusion,
        )
        hooks.on_run_end(run, result)
        return result


def _upcast(output: torch.Tensor) -> torch.Tensor:
    """Losses in float32 at least (bfloat16 autocast outputs), float64 kept as it is."""
    return output if output.dtype == torch.float64 else output.float()


def _r2(prediction: torch.Tensor, target: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    residual = ((target - prediction) ** 2).sum(dim=dim)
    mean = target.mean() if dim is None else target.mean(dim=dim, keepdim=True)
    total = ((target - mean) ** 2).sum(dim=dim)
    return torch.where(total > 0, 1 - residual / total.clamp_min(1e-12), torch.zeros_like(total))


def _grad_norm(model: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))

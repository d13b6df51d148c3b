"""The training loop: one run per optimizer entry and seed, under common random numbers.

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
import math
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from workers.engine import datasets, models, optimizers
from workers.engine.config import JobConfig, RunConfig
from workers.engine.hooks import EpochRecord, Hooks, RunResult, StepRecord


class Experiment:
    """A job's data, loaded once, and the training of its runs."""

    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self.data = datasets.load(config.dataset).to(config.device)
        self.n_train = int(self.data.y_train.shape[0])

    def steps_per_epoch(self, run: RunConfig) -> int:
        return 1 if run.optimizer.full_batch else math.ceil(self.n_train / self.config.batch_size)

    def total_steps(self, run: RunConfig) -> int:
        return self.config.epochs * self.steps_per_epoch(run)

    def initial_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = models.build(self.config.model, self.data.n_features, self.data.n_classes)
        return model.to(self.config.device)

    def batches(self, run: RunConfig) -> Iterator[tuple[int, list[torch.Tensor | None]]]:
        """(epoch, batch indices) for every epoch; ``None`` means the whole training split."""
        generator = torch.Generator().manual_seed(run.seed)
        for epoch in range(1, self.config.epochs + 1):
            if run.optimizer.full_batch:
                yield epoch, [None]
            else:
                order = torch.randperm(self.n_train, generator=generator).to(self.config.device)
                yield epoch, list(order.split(self.config.batch_size))

    def run_all(self, hooks: Hooks) -> dict[int, RunResult]:
        """Train every run, seed by seed, sharing each seed's initial weights."""
        results: dict[int, RunResult] = {}
        hooks.on_start(sum(self.total_steps(run) for run in self.config.runs))
        for seed in dict.fromkeys(run.seed for run in self.config.runs):
            initial = self.initial_model(seed)
            for run in (r for r in self.config.runs if r.seed == seed):
                results[run.key] = self.train(run, copy.deepcopy(initial), hooks)
        return results

    def train(self, run: RunConfig, model: nn.Module, hooks: Hooks) -> RunResult:
        hooks.on_run_start(run, self.total_steps(run))
        torch.manual_seed(run.seed)  # the same stream for any randomness inside the model
        optimizer = optimizers.build(run.optimizer, model.parameters())
        closure_needed = optimizers.needs_closure(optimizer)
        data = self.data
        buffer = _StepBuffer()
        step, train_seconds = 0, 0.0

        for epoch, epoch_batches in self.batches(run):
            model.train()
            for index in epoch_batches:
                x = data.x_train if index is None else data.x_train[index]
                y = data.y_train if index is None else data.y_train[index]
                started = time.perf_counter()
                lr = float(optimizer.param_groups[0]["lr"])  # the rate this step uses
                loss, logits = _forward_backward(model, optimizer, x, y)
                grad_norm = _grad_norm(model)
                if closure_needed:
                    closure = functools.partial(_closure_loss, model, optimizer, x, y)
                    optimizer.step(closure)  # type: ignore[arg-type]
                else:
                    optimizer.step()
                train_seconds += time.perf_counter() - started
                step += 1
                correct = (logits.argmax(dim=1) == y).sum()
                buffer.add(step, epoch, loss, correct, grad_norm, lr, train_seconds, len(y))
                if len(buffer) >= self.config.flush_every and not self._flush(run, buffer, hooks):
                    return self._end(run, hooks, buffer, diverged=True, train_seconds=train_seconds)
            if not self._flush(run, buffer, hooks):
                return self._end(run, hooks, buffer, diverged=True, train_seconds=train_seconds)
            hooks.on_epoch(run, self._epoch_record(model, buffer, epoch, step, train_seconds))
        return self._end(run, hooks, buffer, diverged=False, train_seconds=train_seconds)

    def _flush(self, run: RunConfig, buffer: _StepBuffer, hooks: Hooks) -> bool:
        """Hand buffered steps to the hooks; False when a non-finite value ended the run."""
        records, finite = buffer.drain()
        if records:
            hooks.on_steps(run, records)
        return finite

    def _end(
        self,
        run: RunConfig,
        hooks: Hooks,
        buffer: _StepBuffer,
        *,
        diverged: bool,
        train_seconds: float,
    ) -> RunResult:
        result = RunResult(steps=buffer.last_step, diverged=diverged, train_seconds=train_seconds)
        hooks.on_run_end(run, result)
        return result

    @torch.no_grad()
    def _epoch_record(
        self, model: nn.Module, buffer: _StepBuffer, epoch: int, step: int, train_seconds: float
    ) -> EpochRecord:
        model.eval()
        logits = model(self.data.x_val)
        val_loss = F.cross_entropy(logits, self.data.y_val).item()
        val_accuracy = (logits.argmax(dim=1) == self.data.y_val).float().mean().item()
        train_loss, train_accuracy = buffer.epoch_means()
        return EpochRecord(
            epoch=epoch,
            step=step,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            train_seconds=train_seconds,
        )


def _forward_backward(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return loss, logits


def _closure_loss(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """LBFGS's closure: re-evaluate the batch at the current weights."""
    return _forward_backward(model, optimizer, x, y)[0]


def _grad_norm(model: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


class _StepBuffer:
    """Per-step values kept as tensors and read in one batch per flush.

    Calling ``.item()`` every step would force a host-device sync on a GPU each step; here
    the only sync points are the flush (``tolist``) and the end-of-epoch evaluation.
    """

    def __init__(self) -> None:
        self._values: list[torch.Tensor] = []  # [loss, correct, grad_norm] per step
        self._meta: list[tuple[int, int, float, float, int]] = []
        self.last_step = 0
        self._epoch_loss_sum = 0.0
        self._epoch_correct = 0.0
        self._epoch_samples = 0

    def __len__(self) -> int:
        return len(self._meta)

    def add(
        self,
        step: int,
        epoch: int,
        loss: torch.Tensor,
        correct: torch.Tensor,
        grad_norm: torch.Tensor,
        lr: float,
        train_seconds: float,
        samples: int,
    ) -> None:
        self._values.append(torch.stack([loss.detach(), correct.to(loss.dtype), grad_norm]))
        self._meta.append((step, epoch, lr, train_seconds, samples))

    def drain(self) -> tuple[list[StepRecord], bool]:
        """The buffered records up to the first non-finite one, and whether all were finite."""
        if not self._meta:
            return [], True
        values = torch.stack(self._values).tolist()  # note: the one sync point per flush
        records: list[StepRecord] = []
        finite = True
        for (loss, correct, grad_norm), (step, epoch, lr, seconds, samples) in zip(
            values, self._meta, strict=True
        ):
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                finite = False
                break
            records.append(
                StepRecord(step, epoch, loss, correct / samples, lr, grad_norm, seconds, samples)
            )
            self._epoch_loss_sum += loss * samples
            self._epoch_correct += correct
            self._epoch_samples += samples
        self._values.clear()
        self._meta.clear()
        if records:
            self.last_step = records[-1].step
        return records, finite

    def epoch_means(self) -> tuple[float, float]:
        """Sample-weighted train loss and accuracy over the epoch's steps; resets for the next."""
        n = max(self._epoch_samples, 1)
        means = self._epoch_loss_sum / n, self._epoch_correct / n
        self._epoch_loss_sum, self._epoch_correct, self._epoch_samples = 0.0, 0.0, 0
        return means

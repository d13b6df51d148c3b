"""What a group trains on: the data on the device, and the loss and score of K members.

A ``Problem`` knows nothing of optimizers or of how many members train: it cuts batches
(a seeded permutation per run seed and epoch; ``None`` is the whole training split, for
full-batch optimizers), gathers the inputs of a group's members, turns the members' outputs
(K, B, outputs) into K losses and K scores, and evaluates K members over a whole split.

The score is the batch's accuracy (classification) or its R² (regression), per member, as a
mean over that member's own batch: the one place where a score is divided by a batch size,
so a stored accuracy is in [0, 1] by construction, whatever the group's size or seeds.
Landscapes (2-D test functions, workers/engine/landscapes.py) are a problem too.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from workers.engine import data_cache
from workers.engine.config import EVAL_CHUNK, JobConfig
from workers.engine.fused_layers import SHARED, STACKED, Act

Batch = tuple[torch.Tensor | None, ...]  # each distinct seed's batch indices (None: all)


class Forward(Protocol):
    """What a problem evaluates: the members' forward (workers/engine/members.py)."""

    def forward(self, act: Act) -> torch.Tensor: ...

    def train(self, mode: bool = True) -> None: ...


class Problem:
    """A data set's splits on the device, and the loss and score of K members."""

    has_score = True  # accuracy or R² per step (landscapes have none)

    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self.dtype = getattr(torch, config.dtype)
        # This process's copy when an earlier job loaded the same data (data_cache.py).
        self.data = data_cache.splits(config.dataset, config.device, self.dtype)
        self.n_train = int(self.data.y_train.shape[0])
        self.classification = self.data.task == "classification"

    def steps_per_epoch(self, full_batch: bool) -> int:
        if full_batch:
            return 1
        batches = math.ceil(self.n_train / self.config.batch_size)
        # A trailing batch of one sample joins the one before (batch norm needs two).
        return (
            batches - 1 if batches > 1 and self.n_train % self.config.batch_size == 1 else batches
        )

    def batches(
        self, seed: int, full_batch: bool
    ) -> Iterator[tuple[int, list[torch.Tensor | None]]]:
        """(epoch, batch indices) for every epoch of a run of ``seed``; ``None``: the whole
        training split. Every run of one seed sees the same batches in the same order."""
        generator = torch.Generator().manual_seed(seed)
        for epoch in range(1, self.config.epochs + 1):
            if full_batch:
                yield epoch, [None]
                continue
            # Drawn on the CPU (the same batches on every device). To a GPU from pinned
            # memory, asynchronously: the host never waits for the GPU's queue in the step
            # loop (a pageable copy would; tests/unit/test_gpu_workers.py checks it).
            order = torch.randperm(self.n_train, generator=generator)
            if self.config.device.startswith("cuda"):
                order = order.pin_memory()
            order = order.to(self.config.device, non_blocking=True)
            parts = list(order.split(self.config.batch_size))
            if len(parts) > self.steps_per_epoch(full_batch):
                parts[-2:] = [torch.cat(parts[-2:])]
            yield epoch, parts

    def inputs(self, batch: Batch, seed_of: Sequence[int]) -> tuple[Act, torch.Tensor]:
        """The members' input and targets for one step: shared (B, ...) when every member sees
        the same samples, else gathered per member (K, B, ...); ``seed_of[k]``: the index in
        ``batch`` of member k's seed."""
        data = self.data
        if batch[0] is None:  # full batch: the same for every seed
            return (data.x_train, SHARED), data.y_train
        if len(batch) == 1:
            index = batch[0]
            return (data.x_train[index], SHARED), data.y_train[index]
        index = torch.stack([batch[s] for s in seed_of])  # type: ignore[misc]
        return (data.x_train[index], STACKED), data.y_train[index]

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if not self.config.mixed_precision:
            return contextlib.nullcontext()
        device_type = "cuda" if self.config.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)

    def losses(
        self, outputs: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's mean loss and score over its batch: outputs (K, B, outputs), targets
        (B,) shared or (K, B); each result (K,), the score in float64."""
        assert y is not None
        outputs = _upcast(outputs)
        k, b = outputs.shape[:2]
        y = y.expand(k, b)
        # One member: torch's own mean reduction, whose rounding a run trained alone always
        # had (LBFGS's line search turns a last-bit difference into another trajectory).
        if self.classification:
            if k == 1:
                losses = F.cross_entropy(outputs[0], y[0]).unsqueeze(0)
            else:
                flat = F.cross_entropy(outputs.reshape(k * b, -1), y.reshape(-1), reduction="none")
                losses = flat.view(k, b).mean(dim=1)
            correct = (outputs.argmax(dim=2) == y).sum(dim=1, dtype=torch.float64)
            return losses, correct / b
        prediction = outputs.squeeze(-1)
        if k == 1:
            losses = F.mse_loss(prediction[0], y[0]).unsqueeze(0)
        else:
            losses = ((prediction - y) ** 2).mean(dim=1)
        return losses, _r2(prediction, y).to(torch.float64)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``val`` or ``test``: the split's inputs and targets, or None where it is empty."""
        x, y = getattr(self.data, f"x_{name}"), getattr(self.data, f"y_{name}")
        return (x, y) if len(y) else None

    @torch.no_grad()
    def evaluate(self, members: Forward, name: str) -> tuple[list[float], list[float]] | None:
        """Every member's mean loss and score over a whole split (``val`` or ``test``), in
        eval mode; None where the split is empty."""
        split = self.split(name)
        if split is None:
            return None
        x, y = split
        members.train(False)
        with self.autocast():
            outputs = torch.cat(
                [_upcast(members.forward((chunk, SHARED))) for chunk in x.split(EVAL_CHUNK)],
                dim=1,
            )
        members.train(True)
        losses, scores = self.losses(outputs, y)
        return losses.tolist(), scores.tolist()

    def distances(self, members: object) -> list[float | None] | None:
        """Landscapes: each member's distance to the nearest minimum; None here."""
        return None


def _upcast(output: torch.Tensor) -> torch.Tensor:
    """Losses in float32 at least (bfloat16 autocast outputs), float64 kept as it is."""
    return output if output.dtype == torch.float64 else output.float()


def _r2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each member's R² over its batch: prediction and target (K, B)."""
    residual = ((target - prediction) ** 2).sum(dim=1)
    total = ((target - target.mean(dim=1, keepdim=True)) ** 2).sum(dim=1)
    return torch.where(total > 0, 1 - residual / total.clamp_min(1e-12), torch.zeros_like(total))

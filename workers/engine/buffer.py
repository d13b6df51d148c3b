"""Per-step values kept as tensors and read in one batch per flush, plus the divergence check.

Calling ``.item()`` every step would force a host-device sync on a GPU each step; here the
only sync points are the flush (one ``tolist``) and the evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.engine.hooks import StepRecord


@dataclass
class Divergence:
    """A run diverges when its loss is non-finite or exceeds ``ratio`` x max(first loss, 1)."""

    ratio: float
    bound: float | None = None

    def check(self, loss: float, grad_norm: float) -> bool:
        """True when this step diverged."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return True
        if self.bound is None:
            self.bound = self.ratio * max(abs(loss), 1.0)
        return loss > self.bound


@dataclass
class StepBuffer:
    divergence: Divergence
    _values: list[torch.Tensor] = field(default_factory=list)  # [loss, score sum, grad norm]
    _meta: list[tuple[int, int, float, float, int, float | None, float | None]] = field(
        default_factory=list
    )
    last_step: int = 0
    diverged_at: int | None = None
    _epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])

    def __len__(self) -> int:
        return len(self._meta)

    def add(
        self,
        step: int,
        epoch: int,
        values: torch.Tensor | None,
        lr: float,
        train_seconds: float,
        samples: int,
    ) -> None:
        """``values``: [loss, score sum, grad norm] (the score sum is the number of correct
        predictions, or R² x samples for regression); None when a ``GroupBuffer`` holds them."""
        if values is not None:
            self._values.append(values)
        self._meta.append((step, epoch, lr, train_seconds, samples, None, None))

    def add_evaluation(self, val_loss: float, val_accuracy: float | None) -> None:
        """Attach a mid-epoch evaluation to the newest step."""
        step, epoch, lr, seconds, samples, _, _ = self._meta[-1]
        self._meta[-1] = (step, epoch, lr, seconds, samples, val_loss, val_accuracy)

    def drain(self, with_accuracy: bool) -> list[StepRecord]:
        """The buffered records, up to (excluding) the first diverged one."""
        if not self._meta:
            return []
        return self.records(torch.stack(self._values).tolist(), with_accuracy)  # one sync

    def records(self, values: list[list[float]], with_accuracy: bool) -> list[StepRecord]:
        """The buffered steps with their ``values`` read back, up to the first diverged one."""
        records: list[StepRecord] = []
        for (loss, score, grad_norm), meta in zip(values, self._meta, strict=True):
            step, epoch, lr, seconds, samples, val_loss, val_accuracy = meta
            if self.divergence.check(loss, grad_norm):
                self.diverged_at = step
                break
            accuracy = score / samples if with_accuracy else None
            records.append(
                StepRecord(
                    step,
                    epoch,
                    loss,
                    accuracy,
                    lr,
                    grad_norm,
                    seconds,
                    samples,
                    val_loss=val_loss,
                    val_accuracy=val_accuracy,
                )
            )
            self._epoch_sums[0] += loss * samples
            self._epoch_sums[1] += score
            self._epoch_sums[2] += samples
        self._values.clear()
        self._meta.clear()
        if records:
            self.last_step = records[-1].step
        return records

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (at a flush point, when nothing is buffered)."""
        return {
            "bound": self.divergence.bound,
            "epoch_sums": list(self._epoch_sums),
            "last_step": self.last_step,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.divergence.bound = state["bound"]
        self._epoch_sums = list(state["epoch_sums"])
        self.last_step = state["last_step"]

    def epoch_means(self) -> tuple[float, float]:
        """Sample-weighted train loss and score over the epoch's steps; resets for the next."""
        loss_sum, score_sum, samples = self._epoch_sums
        self._epoch_sums = [0.0, 0.0, 0.0]
        n = max(samples, 1.0)
        return loss_sum / n, score_sum / n


class GroupBuffer:
    """The steps of a fused group: one (K, 3) tensor of values per step for all members, read
    back in one sync per flush, then checked and turned into records member by member."""

    def __init__(self, members: list[StepBuffer]) -> None:
        self.members = members
        self._values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._values)

    def add(
        self,
        step: int,
        epoch: int,
        values: torch.Tensor,
        lrs: list[float],
        seconds: list[float],
        samples: int,
        active: list[int],
    ) -> None:
        self._values.append(values)
        for k in active:
            self.members[k].add(step, epoch, None, lrs[k], seconds[k], samples)

    def drain(self, active: list[int], with_accuracy: bool) -> dict[int, list[StepRecord]]:
        """Each active member's records (up to its first diverged step, if any)."""
        if not self._values:
            return {}
        rows = torch.stack(self._values).tolist()  # (steps, K, 3): the one sync point
        self._values.clear()
        return {k: self.members[k].records([row[k] for row in rows], with_accuracy) for k in active}

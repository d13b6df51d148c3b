"""The steps of a group, kept on the device until a flush, then handed on as columns.

Reading a value back every step would force a host-device sync on a GPU each step; the
recorder keeps each step's (K, fields) tensor as it is and reads a flush's worth of them in
one copy, as numpy arrays, which become each member's ``StepColumns`` by slicing: no Python
object per step or row. The divergence check runs on the same arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from workers.engine.hooks import StepColumns
from workers.engine.step import GRAD_NORM, LOSS, SCORE, X, Y


class Divergence:
    """Member k diverges at its first step whose loss or gradient norm is not finite, or
    whose loss exceeds ``ratio`` x max(|its first loss|, 1) (ignite's ``TerminateOnNan``,
    plus an explosion bound)."""

    def __init__(self, ratio: float, k: int) -> None:
        self.ratio = ratio
        self.bounds: list[float | None] = [None] * k

    def first(self, k: int, loss: np.ndarray, grad_norm: np.ndarray) -> int | None:
        """The index of member k's first diverged step among these, or None."""
        bad = ~(np.isfinite(loss) & np.isfinite(grad_norm))
        if self.bounds[k] is None and len(loss) and not bad[0]:
            self.bounds[k] = self.ratio * max(abs(float(loss[0])), 1.0)
        bound = self.bounds[k]
        if bound is not None:
            bad |= loss > bound
        return int(np.argmax(bad)) if bad.any() else None


class Recorder:
    """Buffered steps of K members, drained into columns at each flush."""

    def __init__(self, k: int, has_score: bool, divergence_ratio: float) -> None:
        self.k, self.has_score = k, has_score
        self.divergence = Divergence(divergence_ratio, k)
        self.last_step = [0] * k  # the last step recorded (handed on), per member
        self._epoch_sums = [[0.0, 0.0, 0.0] for _ in range(k)]  # loss x n, score x n, n
        self._clear()

    def _clear(self) -> None:
        self._values: list[torch.Tensor] = []  # per step (K, fields), on the device
        self._steps: list[int] = []
        self._epochs: list[int] = []
        self._samples: list[int] = []
        self._lrs: list[list[float]] = []
        self._seconds: list[list[float]] = []
        self._evaluations: dict[int, tuple[list[float], list[float]]] = {}

    def __len__(self) -> int:
        return len(self._steps)

    def add(
        self,
        step: int,
        epoch: int,
        samples: int,
        values: torch.Tensor,
        lrs: list[float],
        seconds: list[float],
    ) -> None:
        """One step: its values (K, fields), and each member's rate and seconds so far."""
        self._values.append(values)
        self._steps.append(step)
        self._epochs.append(epoch)
        self._samples.append(samples)
        self._lrs.append(lrs)
        self._seconds.append(seconds)

    def add_evaluation(self, losses: list[float], scores: list[float]) -> None:
        """A mid-epoch validation of every member, after the newest step."""
        self._evaluations[len(self._steps) - 1] = (losses, scores)

    def drain(self, through: Mapping[int, int]) -> tuple[dict[int, StepColumns], dict[int, int]]:
        """Each listed member's buffered steps up to step ``through[k]`` (a member that left
        the group records no step after it) and before its first diverged step; and the
        members that diverged, with the step. Empties the buffer."""
        if not self._steps:
            return {}, {}
        values = torch.stack(self._values).to(torch.float64).cpu().numpy()  # the one sync
        steps = np.array(self._steps, dtype=np.int64)
        epochs = np.array(self._epochs, dtype=np.int64)
        samples = np.array(self._samples, dtype=np.int64)
        lrs = np.array(self._lrs, dtype=np.float64)
        seconds = np.array(self._seconds, dtype=np.float64)
        val_loss = np.full((len(steps), self.k), np.nan)
        val_score = np.full((len(steps), self.k), np.nan)
        for index, (losses, scores) in self._evaluations.items():
            val_loss[index], val_score[index] = losses, scores
        if not self.has_score:
            val_score[:] = np.nan
        nothing = np.full(len(steps), np.nan)
        landscape = values.shape[2] > Y
        columns: dict[int, StepColumns] = {}
        diverged: dict[int, int] = {}
        for k, last in through.items():
            n = int(np.searchsorted(steps, last, side="right"))
            cut = self.divergence.first(k, values[:n, k, LOSS], values[:n, k, GRAD_NORM])
            if cut is not None:
                diverged[k], n = int(steps[cut]), cut
            columns[k] = StepColumns(
                step=steps[:n],
                epoch=epochs[:n],
                loss=values[:n, k, LOSS],
                accuracy=values[:n, k, SCORE] if self.has_score else nothing[:n],
                lr=lrs[:n, k],
                grad_norm=values[:n, k, GRAD_NORM],
                train_seconds=seconds[:n, k],
                x=values[:n, k, X] if landscape else nothing[:n],
                y=values[:n, k, Y] if landscape else nothing[:n],
                val_loss=val_loss[:n, k],
                val_accuracy=val_score[:n, k],
                samples=samples[:n],
            )
            if n:
                sums = self._epoch_sums[k]
                sums[0] += float(values[:n, k, LOSS] @ samples[:n])
                sums[1] += float(values[:n, k, SCORE] @ samples[:n]) if self.has_score else 0.0
                sums[2] += float(samples[:n].sum())
                self.last_step[k] = int(steps[n - 1])
        self._clear()
        return columns, diverged

    def epoch_means(self, k: int) -> tuple[float, float | None]:
        """Member k's sample-weighted train loss and score over the epoch's recorded steps;
        resets for the next epoch."""
        loss_sum, score_sum, samples = self._epoch_sums[k]
        self._epoch_sums[k] = [0.0, 0.0, 0.0]
        n = max(samples, 1.0)
        return loss_sum / n, (score_sum / n if self.has_score else None)

    def state(self, k: int) -> dict[str, Any]:
        """What a checkpoint keeps of member k (at a flush point, when nothing is buffered)."""
        return {
            "bound": self.divergence.bounds[k],
            "epoch_sums": list(self._epoch_sums[k]),
            "last_step": self.last_step[k],
        }

    def load_state(self, k: int, state: dict[str, Any]) -> None:
        self.divergence.bounds[k] = state["bound"]
        self._epoch_sums[k] = list(state["epoch_sums"])
        self.last_step[k] = state["last_step"]

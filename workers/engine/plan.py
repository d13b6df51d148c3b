"""Which runs of a job train together: fused groups, and the runs that train alone (and why).

A comparison trains one model many times (optimizers x hyperparameters x seeds). Trained one
after another, small models leave most of the machine idle: each step is a few small kernels
and a lot of Python. Runs that share data set, model and batch schedule therefore train as
one group of K members (workers/engine/members.py): one forward/backward for all, then each
run's own ``torch.optim`` optimizer (any class, any hyperparameters, its own schedule)
updates its row of the shared parameter bank. Members may have different seeds: each then
gets its own initial weights and its own batch order. Landscape points group the same way.

What does not fuse trains alone, and says why (``RunGroup.reason``): LBFGS (its closure
re-evaluates the loss several times per step), models with dropout or a layer without a
fused form, a run whose batch schedule no other run shares (``gd`` among mini-batch runs),
and jobs that turn fusion off (``"execution": {"fuse": false}``). On a CPU a group is cut
into groups small enough that their activations stay near the caches (``capacity``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from workers.engine import optimizers
from workers.engine.config import RunConfig

# On a CPU a fused group pays while its activations stay near the caches; beyond, every
# element-wise layer streams K members' activations through memory and runs slower than K
# cache-resident runs. Measured on a 2-core EPYC VM (torch 2.13, 1 thread, 7 lecture
# optimizers): digits MLP, 0.6 MB of activations per fused step, 1.83x faster fused; an
# MNIST-sized MLP (784-256-10, batch 128), 4.7 MB, 1.03x; LeNet-5 (batch 128), 53 MB, 0.83x.
CPU_FUSED_ACTIVATION_BYTES = 16 * 2**20
# A group cut to fit under that limit pays only with a few members each: LeNet-5 (batch 128,
# 7.6 MB of activations per member) trained 1.12x slower as fused pairs than alone (CPU
# seconds, median of 3, same VM). Below this many members per group, the runs train alone.
MIN_CUT_GROUP = 4


@dataclass(frozen=True)
class RunGroup:
    """Runs that train together: one fused group, or one run alone (``reason`` says why)."""

    runs: tuple[RunConfig, ...]
    fused: bool
    reason: str | None = None


def plan(
    runs: Sequence[RunConfig],
    blocker: str | None,
    member_bytes: Callable[[bool], int | None],
    one_schedule: bool = False,
) -> list[RunGroup]:
    """Fused groups of the runs that can share a forward/backward; every other run alone.

    ``blocker``: why no run of the job can fuse, or None. ``member_bytes(full_batch)``: the
    activation bytes one member streams per step where that limits a group's size (a CPU),
    else None. ``one_schedule``: every run takes the same steps (landscapes: one per epoch),
    full-batch or not."""
    if blocker:
        return [RunGroup((run,), fused=False, reason=blocker) for run in runs]
    groups: list[RunGroup] = []
    by_schedule: dict[bool, list[RunConfig]] = {}
    for run in runs:
        reasons = [optimizers.alone_reason(c) for c in run.optimizer.torch_classes]
        reason = next((r for r in reasons if r), None)
        if reason:  # a closure (LBFGS), or a plugin that does not step per member
            groups.append(RunGroup((run,), fused=False, reason=reason))
        else:
            full_batch = run.optimizer.full_batch and not one_schedule
            by_schedule.setdefault(full_batch, []).append(run)
    for full_batch, members in by_schedule.items():
        if len(members) == 1:
            schedule = "full-batch" if full_batch else "mini-batch"
            reason = f"no other run of this part shares its {schedule} schedule"
            groups.append(RunGroup(tuple(members), fused=False, reason=reason))
            continue
        groups += _cut(members, member_bytes(full_batch))
    order = {run.key: index for index, run in enumerate(runs)}
    return sorted(groups, key=lambda group: order[group.runs[0].key])


def _cut(members: list[RunConfig], member_bytes: int | None) -> list[RunGroup]:
    """One fused group of ``members``, or several of near-equal size whose activations stay
    under the CPU's limit; alone where fewer than ``MIN_CUT_GROUP`` fit."""
    capacity = len(members) if member_bytes is None else CPU_FUSED_ACTIVATION_BYTES // member_bytes
    if capacity >= len(members):
        return [RunGroup(tuple(members), fused=True)]
    if capacity < MIN_CUT_GROUP:
        size = len(members) * (member_bytes or 0) / 2**20
        reason = (
            f"on a CPU, {len(members)} runs' activations ({size:.0f} MiB per step) would run "
            f"slower fused than one by one (the limit is "
            f"{CPU_FUSED_ACTIVATION_BYTES // 2**20} MiB, in groups of {MIN_CUT_GROUP} at least)"
        )
        return [RunGroup((run,), fused=False, reason=reason) for run in members]
    full = f"on a CPU, fused groups of this schedule hold at most {capacity} runs"
    if any(run.trial for run in members):
        chunks = _whole_labels(members, capacity)
    else:
        count = math.ceil(len(members) / capacity)
        chunks = [members[index::count] for index in range(count)]  # near-equal sizes
    return [
        RunGroup(tuple(chunk), fused=True)
        if len(chunk) > 1
        else RunGroup(tuple(chunk), False, full)
        for chunk in chunks
    ]


def _whole_labels(members: list[RunConfig], capacity: int) -> list[list[RunConfig]]:
    """A study's trials cut with each label's trials kept in one group (a pruning rule ranks
    the trials that train together, so it must see all of an entry's): labels packed in
    order into groups of at most ``capacity`` runs, a label larger than that alone."""
    by_label: dict[str, list[RunConfig]] = {}
    for run in members:
        by_label.setdefault(run.optimizer.label, []).append(run)
    chunks: list[list[RunConfig]] = []
    for trials in by_label.values():
        if chunks and len(chunks[-1]) + len(trials) <= capacity:
            chunks[-1].extend(trials)
        else:
            chunks.append(list(trials))
    return chunks

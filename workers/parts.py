"""Parallel parts: how a job's runs are split into tasks that several worker processes train
at once, and how many torch threads each part uses. Pure planning, no database.

A job of K runs (optimizers x seeds) is split into P *parts*; each part is one Celery task
(``optbench.run_job_part``) that trains its runs with ``torch.set_num_threads(threads)``.
The task that picks the job up plans it and trains the first part itself; idle worker
processes take the others. See docs/cluster.md, "Parallel parts and threads".

Choosing P and threads (``OPTBENCH_JOB_PARTS``, ``OPTBENCH_TORCH_THREADS``):

- an integer P is used as given (at most one part per run); ``auto`` decides from the work:
  on CUDA one part (the GPU is the parallel device; several processes would only share it);
  one run, one part; otherwise the work of one training step, counted in floating-point
  operations (a forward and backward pass of one batch through the job's model, counted by
  ``torch.utils.flop_counter``), decides: below ``THREADS_FROM_FLOPS`` one part per core
  (up to one per run) with one thread each, from it on one part with every core as threads.
- threads per part: ``OPTBENCH_TORCH_THREADS`` when set, else ``max(1, cores // P)``, so the
  parts of one job together use the cores once.

Splitting: the cost of a run is its number of steps (``experiment.total_steps``). Runs that
cannot share a forward/backward (an unfused group of one) are placed whole, largest first,
on the least loaded part. A fused group stays whole on one part when it fits under the
balanced load; otherwise it is poured, runs in order, into the least loaded parts up to the
balanced load, so it becomes a few *contiguous* sub-groups (each sub-group of two or more
runs still trains fused: the engine plans the groups of a part's runs again). Ties go to the
lower part index, so the same groups and P always give the same parts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from workers.engine import Experiment, RunConfig, RunGroup

# Work per step (one run) from which one part with every core as threads beats one part per
# core; measured by benchmarks/bench_parts.py (docs/cluster.md).
THREADS_FROM_FLOPS = 2e9


def cpu_cores() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class PartPlan:
    """The parts of a job (run keys, in job order within a part), threads per part, and why."""

    parts: tuple[tuple[int, ...], ...]
    threads: int
    reason: str


def choose_parts(
    parts_setting: int | Literal["auto"],
    threads_setting: int,
    *,
    device: str,
    cores: int,
    runs: int,
    step_flops: Callable[[], float],
) -> tuple[int, int, str]:
    """(P, threads per part, reason). ``step_flops`` is only called when ``auto`` needs it."""
    if runs <= 1:
        count, reason = 1, "one run"
    elif parts_setting != "auto":
        count, reason = min(parts_setting, runs), f"OPTBENCH_JOB_PARTS={parts_setting}"
    elif device.startswith("cuda"):
        count, reason = 1, "CUDA: one process per GPU"
    else:
        flops, limit = step_flops(), f"{THREADS_FROM_FLOPS / 1e9:g} GFLOP"
        if flops >= THREADS_FROM_FLOPS:
            count, reason = 1, f"{flops / 1e9:.3f} GFLOP per step >= {limit}: threads"
        else:
            count, reason = min(cores, runs), f"{flops / 1e9:.3f} GFLOP per step < {limit}"
    threads = threads_setting or max(1, cores // count)
    return count, threads, reason


def split_runs(
    groups: Sequence[RunGroup], parts: int, cost: Callable[[RunConfig], float]
) -> tuple[tuple[int, ...], ...]:
    """Split the runs of ``groups`` into at most ``parts`` parts of balanced cost.

    Every run lands in exactly one part; empty parts are dropped; within a part the runs keep
    the order of ``groups``; parts are ordered by their first run. Deterministic.
    """
    order = {run.key: index for index, run in enumerate(r for g in groups for r in g.runs)}
    if not order:
        return ()
    count = max(1, min(parts, len(order)))
    loads = [0.0] * count
    members: list[list[int]] = [[] for _ in range(count)]
    total = sum(cost(run) for group in groups for run in group.runs)
    level = total / count  # the balanced load

    def least_loaded() -> int:
        return min(range(count), key=lambda index: (loads[index], index))

    def place(index: int, runs: Sequence[RunConfig]) -> None:
        members[index].extend(run.key for run in runs)
        loads[index] += sum(cost(run) for run in runs)

    # Largest first (ties: job order), as in LPT scheduling.
    pieces = sorted(groups, key=lambda g: (-sum(cost(r) for r in g.runs), order[g.runs[0].key]))
    for group in pieces:
        runs = list(group.runs)
        if not group.fused or len(runs) == 1:
            place(least_loaded(), runs)
            continue
        while runs:
            index = least_loaded()
            room = level - loads[index]
            rest = sum(cost(run) for run in runs)
            half_run = cost(runs[0]) / 2
            if rest <= room + half_run or room <= half_run:
                place(index, runs)  # fits (or nothing fits anywhere): the rest stays together
                break
            # The longest prefix that brings this part nearest to the balanced load.
            taken, load = 0, 0.0
            while taken < len(runs) - 1 and load + cost(runs[taken]) / 2 <= room:
                load += cost(runs[taken])
                taken += 1
            place(index, runs[:taken])
            runs = runs[taken:]
    result = [tuple(sorted(keys, key=order.__getitem__)) for keys in members if keys]
    return tuple(sorted(result, key=lambda keys: order[keys[0]]))


def plan_parts(
    experiment: Experiment,
    parts_setting: int | Literal["auto"],
    threads_setting: int,
    *,
    cores: int | None = None,
) -> PartPlan:
    """The parts of this job and their threads (see the module's docstring)."""
    groups = experiment.groups()
    runs = sum(len(group.runs) for group in groups)
    count, threads, reason = choose_parts(
        parts_setting,
        threads_setting,
        device=experiment.config.device,
        cores=cores or cpu_cores(),
        runs=runs,
        step_flops=lambda: step_flops(experiment),
    )
    split = split_runs(groups, count, lambda run: float(experiment.total_steps(run)))
    return PartPlan(split, threads, reason)


def step_flops(experiment: Experiment) -> float:
    """Floating-point operations of one training step of one run: forward and backward of
    one batch (the configured batch size, or the whole training split when smaller) through
    the job's model at its initial weights. Landscapes (2-D test functions) count as 0."""
    if experiment.landscape:
        return 0.0
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    data = experiment.data
    batch = min(experiment.config.batch_size, experiment.n_train)
    model = experiment.initial_model(0)
    x, y = data.x_train[:batch], data.y_train[:batch]
    counter = FlopCounterMode(display=False)
    with counter:
        output = model(x).float()
        if experiment.classification:
            loss = F.cross_entropy(output, y)
        else:
            loss = F.mse_loss(output.squeeze(-1), y.float())
        loss.backward()
    return float(counter.get_total_flops())

"""Parallel parts: how a job's runs are split into tasks that several worker processes train
at once, and how many torch threads each part uses. Pure planning, no database.

A job of K runs (optimizers x seeds) is split into P *parts*; each part is one Celery task
(``optbench.run_job_part``) that trains its runs with ``torch.set_num_threads(threads)``.
The task that picks the job up plans it and trains the first part itself; idle worker
processes take the others. See docs/cluster.md, "Parallel parts and threads", for the
measurements behind the rule.

Choosing P and threads T (``OPTBENCH_JOB_PARTS``, ``OPTBENCH_TORCH_THREADS``):

- ``OPTBENCH_JOB_PARTS=N``: P = N (at most one part per run), T = ``OPTBENCH_TORCH_THREADS``
  or ``max(1, cores // P)``, so the parts of one job together use the cores once.
- ``auto`` on CUDA: P = 1 (the GPU is the parallel device; more processes would only share
  it, each with its own CUDA context).
- ``auto`` on a CPU decides from the work of one training step of one run: a forward and
  backward pass of one batch through the job's model, counted in floating-point operations
  by ``torch.utils.flop_counter`` (``step_flops``). From ``THREADS_FROM_FLOPS`` on, P = 1
  with every core as threads; a job whose steps add up to less than ``SMALL_JOB_FLOPS``
  (``job_flops``) is one part too (more processes would cost more than they save); below,
  P = one per core (at most one per run, and no more copies of the data set than half the
  available memory holds), and T = 1, or the cores left
  over (``cores // P``, when there are fewer runs than cores) once a step has
  ``THREADS_HELP_FROM_FLOPS``: below that a second thread only costs (small kernels).
  ``OPTBENCH_TORCH_THREADS`` overrides T.

Splitting: the cost of a run is the samples its steps process (``run_samples``). Runs that
train alone (an unfused group of one) are placed whole, largest first, on the least loaded
part. A fused group stays whole on one part when it fits under the balanced load; otherwise
it is poured, runs in order, into the least loaded parts up to the balanced load, so it
becomes a few *contiguous* sub-groups (each sub-group of two or more runs still trains fused:
the engine plans the groups of a part's runs again). Ties go to the lower part index, so the
same groups and P always give the same parts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from workers.engine import Experiment, RunConfig, RunGroup

# Measured by benchmarks/bench_parts.py on the 2-core machine (docs/cluster.md), per step of
# one run. Two processes with one thread each were faster than one process with two threads
# at every size measured, from 2.6 MFLOP (0.23 s against 0.59 s) up to 58 GFLOP per step
# (784-4096-4096-10 at batch 512: 36.5 s against 43.3 s), so one part with every core as
# threads is never chosen for speed here: P is limited by runs and memory instead.
THREADS_FROM_FLOPS = float("inf")
# A second thread in one part pays only on large steps (small kernels cost more to share than
# they gain; with OMP_WAIT_POLICY=PASSIVE each parallel region also wakes its threads). It
# slowed the steps measured up to 200 MFLOP (the digits MLP's 2.6 MFLOP, 0.43 s -> 1.27 s; a
# 784-256-10 MLP's 52 MFLOP, 2.84 s -> 3.78 s; seven MNIST-1D runs fused, 7 x 29 MFLOP,
# 3.08 s -> 4.40 s) and sped up those from 367 MFLOP (seven 784-256-10 runs fused,
# 3.12 s -> 2.59 s; 784-1024-1024-10 at batch 256, 2.4 GFLOP, 12.3 s -> 7.8 s). The rule
# compares one run's step (a part with fewer runs than cores trains one run) with this.
THREADS_HELP_FROM_FLOPS = 3e8
# A job of less work than this trains as one part: a second process costs its own start
# (claiming its runs, its transactions, its share of the cores) and splits a fused group
# whose small steps cost about as much for four members as for eight. The lecture job
# (eight optimizers on digits, 0.35 GFLOP per epoch) at 20 epochs, 7 GFLOP, measured by
# benchmarks/bench_small_job.py on the loaded 2-core VM: 0.90 s end to end as one part,
# 1.71 s as two (medians of 5). Larger jobs split as before.
SMALL_JOB_FLOPS = 2e10
# Each part holds its own copy of the data set: P copies take at most this share of the
# memory available when the job is planned.
MEMORY_SHARE = 0.5


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


@dataclass(frozen=True)
class Choice:
    """How many parts, torch threads per part, and why."""

    parts: int
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
    memory_parts: Callable[[], int] = lambda: 1 << 30,
    max_parts: int | None = None,
    job_flops: Callable[[float], float] = lambda step: float("inf"),
) -> Choice:
    """The rule of the module's docstring. ``step_flops``, ``job_flops`` (the whole job's,
    from one step's) and ``memory_parts`` (how many copies of the data set fit) are called
    only when ``auto`` on a CPU needs them; ``max_parts`` caps P (1 for a job trained
    in-process)."""
    limit = max(1, min(runs, max_parts or runs))
    if parts_setting != "auto":
        count = min(parts_setting, limit)
        threads = max(1, cores // count)
        reason = f"OPTBENCH_JOB_PARTS={parts_setting}"
    elif device.startswith("cuda"):
        count, threads, reason = 1, cores, "CUDA: one process per GPU"
    else:
        flops = step_flops()
        work = f"{flops / 1e6:.1f} MFLOP per step"
        if flops >= THREADS_FROM_FLOPS:
            count, reason = 1, f"{work}: threads beat processes"
        elif (total := job_flops(flops)) < SMALL_JOB_FLOPS:
            count, reason = 1, f"{work}, {total / 1e9:.1f} GFLOP in all: a small job, one part"
        else:
            fit = max(1, memory_parts())
            count = min(cores, limit, fit)
            reason = f"{work}: one part per core" + (
                f", {fit} data set cop{'y' if fit == 1 else 'ies'} fit in memory"
                if fit < min(cores, limit)
                else ""
            )
        many = flops >= THREADS_HELP_FROM_FLOPS
        threads = max(1, cores // count) if many else 1
    if threads_setting:
        threads = threads_setting
    return Choice(count, threads, reason)


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
    max_parts: int | None = None,
) -> PartPlan:
    """The parts of this job and their threads (see the module's docstring)."""
    groups = experiment.groups()
    choice = choose_parts(
        parts_setting,
        threads_setting,
        device=experiment.config.device,
        cores=cores or cpu_cores(),
        runs=sum(len(group.runs) for group in groups),
        step_flops=lambda: step_flops(experiment),
        memory_parts=lambda: int(MEMORY_SHARE * memory_available() // data_bytes(experiment)),
        max_parts=max_parts,
        job_flops=lambda step: job_flops(experiment, step),
    )
    split = split_runs(groups, choice.parts, lambda run: float(run_samples(experiment, run)))
    return PartPlan(split, choice.threads, choice.reason)


def data_bytes(experiment: Experiment) -> int:
    """Bytes of the job's data set as a part holds it (at least 1)."""
    if experiment.landscape:
        return 1
    data = experiment.data
    tensors = (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test)
    return max(1, sum(t.element_size() * t.nelement() for t in tensors))


def memory_available() -> int:
    """Bytes this machine (or its container's memory limit) can still give, from
    /proc/meminfo and cgroup v2; very large when neither can be read."""
    available = 1 << 62
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    try:
        with (
            open("/sys/fs/cgroup/memory.max") as limit,
            open("/sys/fs/cgroup/memory.current") as used,
        ):
            text = limit.read().strip()
            if text != "max":
                available = min(available, int(text) - int(used.read()))
    except (OSError, ValueError):
        pass
    return max(available, 0)


def job_flops(experiment: Experiment, step: float) -> float:
    """The job's floating-point operations, from one step's (``step_flops``): every run's
    samples (``run_samples``) at the step's cost per sample."""
    if experiment.landscape:
        return 0.0
    batch = min(experiment.config.batch_size, experiment.n_train)
    samples = sum(run_samples(experiment, run) for run in experiment.config.runs)
    return step * samples / batch


def run_samples(experiment: Experiment, run: RunConfig) -> int:
    """A run's cost for balancing parts: the samples its steps process (a full-batch step,
    ``gd``, processes the whole training split, not one batch)."""
    if experiment.landscape:
        return experiment.total_steps(run)
    batch = experiment.n_train if run.optimizer.full_batch else experiment.config.batch_size
    return experiment.total_steps(run) * min(batch, experiment.n_train)


# Counted FLOPs by what they depend on (see ``step_flops``): counting runs the model under
# the FLOP counter, 14 ms of a 20-epoch lecture job's planning; the next job of the same
# model on the same data shapes reads it back.
_STEP_FLOPS: dict[tuple[object, ...], float] = {}


def step_flops(experiment: Experiment) -> float:
    """Floating-point operations of one training step of one run: forward and backward of
    one batch (the configured batch size, or the whole training split when smaller) through
    the job's model at its initial weights. Landscapes (2-D test functions) count as 0.
    They depend on the model, the data's shapes and the batch only: counted once per
    process for each of those."""
    if experiment.landscape:
        return 0.0
    config, data = experiment.config, experiment.data
    key = (
        config.model.name,
        repr(sorted(config.model.params.items())),
        data.input_shape,
        data.n_outputs,
        min(config.batch_size, experiment.n_train),
        experiment.classification,
        config.dtype,
        config.device,
    )
    if key not in _STEP_FLOPS:
        _STEP_FLOPS[key] = _count_step_flops(experiment)
    return _STEP_FLOPS[key]


def _count_step_flops(experiment: Experiment) -> float:
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

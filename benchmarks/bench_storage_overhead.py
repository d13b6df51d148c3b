"""Storage overhead: what storing every training step in PostgreSQL costs the training.

    .venv/bin/python -m benchmarks.bench_storage_overhead [--epochs 560] [--pairs 5]

Builds a fresh PostgreSQL database (dropped at the end) and migrates it, then:

1. Training, in this process, through the engine (``workers.engine.Experiment.run_all``, as
   a worker runs a job): the lecture job (digits, an MLP with 128 hidden units, the 8
   optimizers of ``services.spec.LECTURE_SPEC``), ``--epochs`` epochs, flushing every
   ``--flush-every`` steps (and at every epoch end, as the engine does), interleaved ABAB:
   A with no-op hooks, B with the SQL sink (``workers.sinks.sql.SqlSink``) writing every
   step and epoch of a new job's runs, ``--pairs`` B's, each between two A's (A B A B ...
   A). Each B is compared with the mean of the A just before and the A just after it, so a
   machine whose load drifts (other engineers' work on a shared VM) cancels out of each
   pair; it prints each pair's overhead and their median, quartiles and range, for the wall
   time, this process's CPU and the training thread's CPU, and whether the median meets the
   5 % goal. The sink's time counts until its last row is stored (``run_all`` returns after
   the last ``on_run_end``, which waits for that; and ``close()``). It also prints the CPU
   of the local PostgreSQL server (read from /proc), the share of the machine other
   processes used, the rows per second the sink stored, and checks that every row reached
   the database. Before the first training it waits (up to ``--patience`` s) until other
   processes use less than ``--quiet`` of the CPUs.
2. Write throughput alone: ``--rows`` synthetic steps of ``--runs`` runs, built once as the
   engine's columns (``StepColumns``, cut into flushes before the clock starts), handed to a
   fresh sink as fast as it takes them, in ``on_flush`` calls of ``flush`` rows per run for
   all runs at once (as fused training flushes), for each size in ``--flush-sizes``;
   rows/s until the last row is stored, the share of that time the caller was blocked, and
   the server's CPU per row. ``--inline``: the sink without its writer thread, so each
   ``on_flush`` is one transaction.

Torch runs one intra-op thread by default (``--torch-threads``): on the 2-core VM this was
written on, that is the faster setting for this model (two threads took 50 % to 10x longer,
varying from run to run), and it leaves the second core to the database and the writer.
Uses only ``Experiment.run_all`` and the hooks, so it measures whichever engine is checked
out (one run at a time, or runs fused and flushed together). The server is PostgreSQL at
``--admin-url`` (default: ``$OPTBENCH_TEST_POSTGRES`` or the local trust-auth server as user
postgres); its user must be allowed to create databases.
"""

from __future__ import annotations

import os

# As in a worker (workers/celery_app.py): waiting OpenMP threads sleep instead of spinning,
# read when torch loads, so before anything imports it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import func, select

from benchmarks.support import ADMIN_URL, cpu_description, scratch_database
from services.db import store
from services.db.models import EpochMetric, StepMetric
from services.db.session import unit_of_work
from services.spec import LECTURE_SPEC, JobSpec
from workers.engine import (
    EpochRecord,
    Experiment,
    Hooks,
    JobConfig,
    OptimizerConfig,
    RunConfig,
    RunResult,
    StepColumns,
)
from workers.engine.hooks import CompositeHooks


class Counter(Hooks):
    """Counts what the engine reports (in both cases, so that both pay for it)."""

    def __init__(self) -> None:
        self.steps = self.epochs = self.flushes = 0

    def on_flush(self, batch: Sequence[tuple[RunConfig, StepColumns]]) -> None:
        self.flushes += 1
        self.steps += sum(len(steps) for _, steps in batch)

    def on_epochs(self, run: RunConfig, epochs: Sequence[EpochRecord]) -> None:
        self.epochs += len(epochs)


def lecture_job(epochs: int) -> JobSpec:
    spec = copy.deepcopy(LECTURE_SPEC)
    spec["name"] = "storage overhead benchmark"
    spec["epochs"] = epochs
    return JobSpec.model_validate(spec)


def stored_job(spec: JobSpec) -> list[tuple[int, str, str, dict[str, Any], int]]:
    """A new job's runs: (id, label, optimizer, hyperparameters, seed)."""
    with unit_of_work() as session:
        job = store.create_job(session, spec)
        return [
            (run.id, run.label, run.optimizer, dict(run.hyperparameters), run.seed)
            for run in job.runs
        ]


def stored_config(spec: JobSpec, flush: int) -> JobConfig:
    """A new stored job's engine configuration, built as the workers build it."""
    from services.settings import get_settings
    from workers.adapter import job_config

    with unit_of_work() as session:
        job = store.create_job(session, spec)
        session.flush()
        config = job_config(session, job, spec, "cpu", get_settings())
    return dataclasses.replace(config, flush_every=flush)


def close(sink: Hooks) -> None:
    closer = getattr(sink, "close", None)
    if closer is not None:
        closer()


def server_cpu() -> float | None:
    """CPU seconds used so far by the local PostgreSQL server's processes (None: none seen)."""
    ticks, seen = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(") ")
        if name.endswith("(postgres"):
            fields = rest.split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            seen = True
    return ticks / os.sysconf("SC_CLK_TCK") if seen else None


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the machine has been busy, and elapsed over all its CPUs (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def others_share(seconds: float = 1.0) -> float:
    """Share of the machine's CPUs that other processes (the database server included) used
    over the next ``seconds``."""
    busy, total = machine_cpu()
    own = time.process_time()
    time.sleep(seconds)
    busy2, total2 = machine_cpu()
    others = busy2 - busy - (time.process_time() - own)
    return max(others, 0.0) / max(total2 - total, 1e-9)


def wait_until_quiet(limit: float, patience: float) -> float:
    """Wait (at most ``patience`` s) until other processes use less than ``limit`` of the
    CPUs over a second; their share in the last second."""
    deadline = time.monotonic() + patience
    while True:
        share = others_share()
        if share < limit or time.monotonic() > deadline:
            return share


@dataclass
class Measure:
    wall: float
    cpu: float  # this process, every thread
    training_cpu: float  # the training thread alone
    server: float | None  # the PostgreSQL server's processes
    others: float  # share of the machine that other processes used meanwhile
    counter: Counter
    stats: str = ""


def train(config: JobConfig, with_sink: bool) -> Measure:
    """Time run_all (and the sink's close): wall, this process's CPU, the server's CPU."""
    from workers.sinks.sql import SqlSink

    experiment = Experiment(config)  # data loaded before the clock starts
    counter = Counter()
    sink = SqlSink() if with_sink else Hooks()
    server, (busy, total) = server_cpu(), machine_cpu()
    cpu, started, own = time.process_time(), time.perf_counter(), time.thread_time()
    experiment.run_all(CompositeHooks(sink, counter))
    close(sink)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    own = time.thread_time() - own
    server_after, (busy2, total2) = server_cpu(), machine_cpu()
    used = None if server is None or server_after is None else server_after - server
    others = max(busy2 - busy - cpu - (used or 0.0), 0.0) / max(total2 - total, 1e-9)
    return Measure(wall, cpu, own, used, others, counter, writer_stats(sink))


def writer_stats(sink: Hooks) -> str:
    stats = getattr(sink, "stats", None)
    if stats is None:
        return ""
    return (
        f"writer: {stats.transactions:,} transactions, {stats.seconds:.2f} s in them, "
        f"{stats.cpu_seconds:.2f} s CPU; training waited {stats.blocked_seconds:.2f} s"
    )


def stored(run_ids: list[int]) -> tuple[int, int]:
    with unit_of_work() as session:
        steps = session.scalar(
            select(func.count()).select_from(StepMetric).where(StepMetric.run_id.in_(run_ids))
        )
        epochs = session.scalar(
            select(func.count()).select_from(EpochMetric).where(EpochMetric.run_id.in_(run_ids))
        )
    return int(steps or 0), int(epochs or 0)


GOAL = 0.05  # issue 17: storing every step costs at most 5 % of training time


def paired(plain: Sequence[float], sink: Sequence[float]) -> list[float]:
    """Each sink training's overhead against the mean of the no-op trainings just before and
    just after it (``plain`` has one more than ``sink``: A B A B ... A). A load that drifts
    linearly over the three cancels out of each pair."""
    pairs = zip(sink, plain[:-1], plain[1:], strict=True)
    return [s / ((before + after) / 2) - 1 for s, before, after in pairs]


def spread(values: Sequence[float]) -> str:
    """Median, quartiles and range of overheads, in percent."""
    ordered = sorted(values)
    if len(ordered) >= 4:
        low, _, high = statistics.quantiles(ordered, n=4, method="inclusive")
        quartiles = f", quartiles {low * 100:+.1f} % to {high * 100:+.1f} %"
    else:
        quartiles = ""
    return (
        f"median {statistics.median(ordered) * 100:+.1f} %{quartiles}, "
        f"range {ordered[0] * 100:+.1f} % to {ordered[-1] * 100:+.1f} % ({len(ordered)} pairs)"
    )


def overhead(args: argparse.Namespace) -> float:
    """The ABAB design: ``--pairs`` trainings with the SQL sink (B), each between two with
    no-op hooks (A), so that 2 x pairs + 1 trainings run one after another. Returns the
    median paired overhead (sink / mean of its neighbours - 1)."""
    spec = lecture_job(args.epochs)
    plain_config = stored_config(spec, args.flush_every)
    train(plain_config, False)  # warm up both paths
    train(stored_config(spec, args.flush_every), True)
    share = wait_until_quiet(args.quiet, args.patience)
    print(f"  (others used {share:.0%} of the CPUs in the second before the first)", flush=True)
    plain: list[Measure] = [train(plain_config, False)]
    sinks: list[Measure] = []
    print(f"  A: no-op hooks {plain[-1].wall:6.2f} s", flush=True)
    for _ in range(args.pairs):
        sink_config = stored_config(spec, args.flush_every)
        sink = train(sink_config, True)
        sinks.append(sink)
        plain.append(train(plain_config, False))
        steps, epochs = stored([run.key for run in sink_config.runs])
        reported = (sink.counter.steps, sink.counter.epochs)
        assert (steps, epochs) == reported, f"stored {steps, epochs}, reported {reported}"
        (this,) = paired([m.wall for m in plain[-2:]], [sink.wall])
        print(
            f"  B: SQL sink {sink.wall:6.2f} s ({this * 100:+.1f} % against its neighbours); "
            f"{steps:,} step and {epochs:,} epoch rows in {sink.counter.flushes:,} flushes, "
            f"all stored; {sink.stats}; other processes used {sink.others:.0%} of the CPUs\n"
            f"  A: no-op hooks {plain[-1].wall:6.2f} s (others {plain[-1].others:.0%})",
            flush=True,
        )
    walls = paired([m.wall for m in plain], [m.wall for m in sinks])
    own = paired([m.training_cpu for m in plain], [m.training_cpu for m in sinks])
    cpu = paired([m.cpu for m in plain], [m.cpu for m in sinks])
    wall = statistics.median(m.wall for m in plain), statistics.median(m.wall for m in sinks)
    cpus = statistics.median(m.cpu for m in plain), statistics.median(m.cpu for m in sinks)
    rows = sinks[-1].counter.steps
    print(
        f"\n{args.pairs} pairs (ABAB..A, each sink training against the two no-op ones around it)"
        f"\nstorage overhead, wall: {spread(walls)}\n"
        f"  CPU of this process: {spread(cpu)}\n"
        f"  CPU of the training thread alone: {spread(own)}\n"
        f"  medians: no-op hooks {wall[0]:.2f} s wall, {cpus[0]:.2f} s CPU; SQL sink "
        f"{wall[1]:.2f} s wall, {cpus[1]:.2f} s CPU; other processes used "
        f"{statistics.median(m.others for m in plain + sinks):.0%} of the CPUs (median)",
        flush=True,
    )
    if all(m.server is not None for m in plain + sinks):
        server = [statistics.median(m.server or 0.0 for m in ms) for ms in (plain, sinks)]
        # The server's CPU counts other clients too (the A's show how much): paired as well.
        together = paired(
            [m.cpu + (m.server or 0.0) for m in plain], [m.cpu + (m.server or 0.0) for m in sinks]
        )
        print(
            f"  CPU of the PostgreSQL server per training: {server[0]:.2f} s with no-op hooks "
            f"(other clients), {server[1]:.2f} s with the SQL sink\n"
            f"  CPU of this process and the server together: {spread(together)}"
        )
    median = statistics.median(walls)
    verdict = "met" if median <= GOAL else "NOT met"
    print(
        f"  step rows stored per second of training: {rows / wall[1]:,.0f} ({rows:,} per job)\n"
        f"goal: median paired overhead <= {GOAL:.0%}: {verdict} ({median * 100:+.1f} %)",
        flush=True,
    )
    return median


def generate(steps: int, seed: int) -> StepColumns:
    """One run's steps, as the engine hands them to sinks (a mid-epoch evaluation every
    1,000 steps)."""
    rng = np.random.default_rng(seed)
    step = np.arange(1, steps + 1, dtype=np.int64)
    loss = 2.3 * np.exp(-step / (steps / 5)) + 0.05 * rng.random(steps)
    evaluated = step % 1000 == 0
    return StepColumns(
        step=step,
        epoch=1 + (step - 1) // 1000,
        loss=loss,
        accuracy=1.0 - loss / 2.5,
        lr=np.full(steps, 0.05),
        grad_norm=rng.random(steps),
        train_seconds=step * 1e-3,
        x=np.full(steps, np.nan),
        y=np.full(steps, np.nan),
        val_loss=np.where(evaluated, loss, np.nan),
        val_accuracy=np.where(evaluated, 0.5, np.nan),
        samples=np.full(steps, 64, dtype=np.int64),
    )


def sliced(columns: StepColumns, start: int, stop: int) -> StepColumns:
    """Steps start..stop-1 (0-based) of a run's columns: views, no copy."""
    cut = {f.name: getattr(columns, f.name)[start:stop] for f in dataclasses.fields(columns)}
    return dataclasses.replace(columns, **cut)


def throughput(args: argparse.Namespace) -> None:
    from workers.sinks.sql import SqlSink

    steps = args.rows // args.runs
    columns = [generate(steps, seed) for seed in range(args.runs)]
    for size in args.flush_sizes:
        spec = copy.deepcopy(LECTURE_SPEC)
        spec.update(
            name="write throughput", optimizers=[{"name": "sgd"}], seeds=list(range(args.runs))
        )
        runs = stored_job(JobSpec.model_validate(spec))
        configs = [
            RunConfig(key, OptimizerConfig(label, name, "SGD", {}), seed)
            for key, label, name, _, seed in runs
        ]
        plan = [  # the flushes, cut before the clock starts
            [(c, sliced(r, first, first + size)) for c, r in zip(configs, columns, strict=True)]
            for first in range(0, steps, size)
        ]
        sink = SqlSink(background=False) if args.inline else SqlSink()
        blocked = 0.0
        server = server_cpu()
        started = time.perf_counter()
        for config in configs:
            sink.on_run_start(config, steps)
        for flush in plan:
            call = time.perf_counter()
            sink.on_flush(flush)
            blocked += time.perf_counter() - call
        result = RunResult(steps=steps, diverged=False, train_seconds=1.0)
        for config in configs:
            sink.on_run_end(config, result)
        close(sink)
        seconds = time.perf_counter() - started
        server_after = server_cpu()
        server_used = ""
        if server is not None and server_after is not None:
            per_row = (server_after - server) / (steps * args.runs)
            server_used = f", server {per_row * 1e6:.1f} µs CPU per row"
        stored_steps, _ = stored([run[0] for run in runs])
        assert stored_steps == steps * args.runs, f"{stored_steps} stored"
        print(
            f"  flush = {size:>5,} rows x {args.runs} runs per on_flush: "
            f"{stored_steps / seconds:9,.0f} rows/s stored "
            f"({stored_steps:,} rows, {seconds:.2f} s; caller blocked {blocked / seconds:.0%}); "
            f"{writer_stats(sink)}{server_used}",
            flush=True,
        )


def run(args: argparse.Namespace) -> None:
    from services.db.migrate import upgrade

    began = time.perf_counter()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    print(
        f"machine: {cpu_description()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads",
        flush=True,
    )
    with scratch_database(args.admin_url) as url:
        upgrade(url.render_as_string(hide_password=False))
        if args.pairs:
            print(
                f"\ntraining: lecture job (digits, mlp [128], 8 optimizers), "
                f"{args.epochs} epochs, flush every {args.flush_every} steps",
                flush=True,
            )
            overhead(args)
        if args.flush_sizes and args.rows:  # --rows 0: the training part alone
            how = "in the calling thread" if args.inline else "through the writer thread"
            print(
                f"\nwrite throughput: {args.rows:,} step rows of {args.runs} runs, {how}",
                flush=True,
            )
            throughput(args)
    print(f"whole benchmark {time.perf_counter() - began:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=560, help="about 10 s on a 2-core CPU")
    parser.add_argument(
        "--pairs",
        "--repeats",
        type=int,
        default=5,
        help="trainings with the SQL sink, each between two with no-op hooks; 0: skip the "
        "training part",
    )
    parser.add_argument(
        "--flush-every", type=int, default=100, help="steps per flush (OPTBENCH_FLUSH_EVERY_STEPS)"
    )
    parser.add_argument("--rows", type=int, default=200_000, help="write throughput: rows")
    parser.add_argument("--runs", type=int, default=8, help="write throughput: runs")
    parser.add_argument(
        "--flush-sizes",
        type=lambda text: [int(part) for part in text.split(",") if part],
        default=[17, 100, 1000],
        help="write throughput: rows per run per flush, comma-separated ('' skips it)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (OPTBENCH_TORCH_THREADS); 0: torch's default",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.1,
        help="before the first training, wait until other processes use less than this share "
        "of the CPUs over a second",
    )
    parser.add_argument("--patience", type=float, default=10.0, help="... for at most this")
    parser.add_argument(
        "--inline",
        action="store_true",
        help="write throughput: the sink without its writer thread (SqlSink(background=False):"
        " each on_flush written and committed in the call)",
    )
    parser.add_argument("--admin-url", default=ADMIN_URL)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
